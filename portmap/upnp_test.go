package portmap

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// fakeIGD is a UPnP IGD (device description and SOAP control) on loopback.
type fakeIGD struct {
	srv *httptest.Server

	mu            sync.Mutex
	service       string // e.g. WANIPConnection:1
	external      string
	permanentOnly bool // answer 725 to a lease other than 0
	mappings      map[string]string
	leases        []string
	// desc, when set, replaces the device description (a format with one
	// %s for the service type).
	desc string
	// redirectTo, when set, answers every request with a 307 to this base
	// URL plus the request's path.
	redirectTo string
	requests   int
}

func newFakeIGD(t *testing.T, service string) *fakeIGD {
	return newFakeIGDAt(t, service, "127.0.0.1")
}

// newFakeIGDAt serves the IGD on ip (any 127/8 address: loopback answers
// them all), to play a host other than the gateway.
func newFakeIGDAt(t *testing.T, service, ip string) *fakeIGD {
	t.Helper()
	g := &fakeIGD{service: service, external: "203.0.113.9", mappings: map[string]string{}}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(g.handle))
	ln, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	g.srv.Listener.Close()
	g.srv.Listener = ln
	g.srv.Start()
	t.Cleanup(g.srv.Close)
	return g
}

// served is how many HTTP requests the IGD got.
func (g *fakeIGD) served() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}

func (g *fakeIGD) config() Config {
	return Config{Gateway: netip.MustParseAddr("127.0.0.1"), UPnPURL: g.srv.URL + "/rootDesc.xml", Disable: []Protocol{PCP, NATPMP}}
}

const fakeDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>fake</friendlyName><UDN>uuid:1</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:2</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:3</UDN>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:%s</serviceType><serviceId>urn:upnp-org:serviceId:conn</serviceId>
<controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

var soapArg = regexp.MustCompile(`<(New[A-Za-z]+)>([^<]*)</New[A-Za-z]+>`)

func (g *fakeIGD) handle(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests++
	if g.redirectTo != "" {
		http.Redirect(w, r, g.redirectTo+r.URL.Path, http.StatusTemporaryRedirect)
		return
	}
	if r.Method == http.MethodGet {
		desc := fakeDesc
		if g.desc != "" {
			desc = g.desc
		}
		fmt.Fprintf(w, desc, g.service)
		return
	}
	body, _ := io.ReadAll(r.Body)
	action := r.Header.Get("SOAPAction")
	action = strings.Trim(action[strings.LastIndex(action, "#")+1:], `"`)
	args := map[string]string{}
	for _, m := range soapArg.FindAllStringSubmatch(string(body), -1) {
		args[m[1]] = m[2]
	}
	out := ""
	switch action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + g.external + "</NewExternalIPAddress>"
	case "AddPortMapping", "AddAnyPortMapping":
		g.leases = append(g.leases, args["NewLeaseDuration"])
		if g.permanentOnly && args["NewLeaseDuration"] != "0" {
			g.fault(w, 725, "OnlyPermanentLeasesSupported")
			return
		}
		g.mappings[args["NewExternalPort"]] = args["NewInternalClient"] + ":" + args["NewInternalPort"]
		if action == "AddAnyPortMapping" {
			out = "<NewReservedPort>" + args["NewExternalPort"] + "</NewReservedPort>"
		}
	case "DeletePortMapping":
		if _, ok := g.mappings[args["NewExternalPort"]]; !ok {
			g.fault(w, 714, "NoSuchEntryInArray")
			return
		}
		delete(g.mappings, args["NewExternalPort"])
	default:
		g.fault(w, 401, "Invalid Action")
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="urn:schemas-upnp-org:service:%s">%s</u:%sResponse></s:Body></s:Envelope>`, action, g.service, out, action)
}

func (g *fakeIGD) fault(w http.ResponseWriter, code int, desc string) {
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code, desc)
}

func TestUPnPServices(t *testing.T) {
	for _, svc := range []string{"WANIPConnection:1", "WANIPConnection:2", "WANPPPConnection:1"} {
		t.Run(svc, func(t *testing.T) {
			g := newFakeIGD(t, svc)
			c := NewClient(g.config())
			m, err := c.Map(t.Context(), 41641)
			if err != nil {
				t.Fatal(err)
			}
			if m.Protocol != UPnP || m.External != netip.MustParseAddrPort("203.0.113.9:41641") || m.Lease != DefaultLease {
				t.Fatalf("mapping = %+v", m)
			}
			g.mu.Lock()
			got := g.mappings["41641"]
			g.mu.Unlock()
			if got != "127.0.0.1:41641" {
				t.Fatalf("IGD maps 41641 to %q", got)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.mappings) != 0 {
				t.Errorf("mapping left after Close: %v", g.mappings)
			}
		})
	}
}

func TestUPnPOnlyPermanentLeases(t *testing.T) {
	g := newFakeIGD(t, "WANIPConnection:1")
	g.permanentOnly = true
	c := NewClient(g.config())
	m, err := c.Map(t.Context(), 41000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Lease != 0 || !m.Expires().IsZero() {
		t.Fatalf("mapping = %+v, want a permanent one", m)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.leases) != 2 || g.leases[0] != "7200" || g.leases[1] != "0" {
		t.Errorf("leases asked: %v, want [7200 0]", g.leases)
	}
}

func TestUPnPDoubleNAT(t *testing.T) {
	g := newFakeIGD(t, "WANIPConnection:1")
	g.external = "10.0.0.138"
	c := NewClient(g.config())
	if m, err := c.Map(t.Context(), 41000); err == nil || !strings.Contains(err.Error(), "double NAT") {
		t.Fatalf("Map = %+v, %v; want a double-NAT error", m, err)
	}
	res, err := Probe(t.Context(), g.config())
	if err != nil {
		t.Fatal(err)
	}
	if !res.UPnP || res.ExternalProblem == "" {
		t.Fatalf("probe = %+v, want UPnP with an external-address problem", res)
	}
}

func TestSSDPLocation(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://10.1.0.1:5000/rootDesc.xml\r\n\r\n"
	if got := ssdpLocation([]byte(ok)); got != "http://10.1.0.1:5000/rootDesc.xml" {
		t.Errorf("location = %q", got)
	}
	for _, bad := range []string{"", "garbage", "HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n", "HTTP/1.1 200 OK\r\nST: urn:other\r\nLOCATION: http://x/\r\n\r\n"} {
		if got := ssdpLocation([]byte(bad)); got != "" {
			t.Errorf("location of %q = %q, want none", bad, got)
		}
	}
}

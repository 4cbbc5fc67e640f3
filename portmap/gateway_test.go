package portmap

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// A LAN neighbour may answer SSDP, NAT-PMP and PCP. Only the gateway's
// answers count: these tests play the neighbour on 127.0.0.2 while the
// gateway is 127.0.0.1 (loopback answers all of 127/8).

// fakeSSDP answers every M-SEARCH with one LOCATION, from its own address.
type fakeSSDP struct {
	conn *net.UDPConn

	mu       sync.Mutex
	location string
	searches int
}

func newFakeSSDP(t *testing.T, ip, location string) *fakeSSDP {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &fakeSSDP{conn: c, location: location}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
				continue
			}
			f.mu.Lock()
			f.searches++
			loc := f.location
			f.mu.Unlock()
			c.WriteToUDP([]byte("HTTP/1.1 200 OK\r\nST: "+igdDevice+"\r\nLOCATION: "+loc+"\r\n\r\n"), from)
		}
	}()
	return f
}

func (f *fakeSSDP) addr() string { return f.conn.LocalAddr().String() }

func (f *fakeSSDP) searched() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.searches
}

// ssdpConfig discovers the IGD through the fake SSDP responder, with the
// gateway at 127.0.0.1.
func ssdpConfig(s *fakeSSDP) Config {
	return Config{Gateway: netip.MustParseAddr("127.0.0.1"), ssdpAddr: s.addr(), Disable: []Protocol{PCP, NATPMP}}
}

func TestSSDPAnswerOnlyFromGateway(t *testing.T) {
	gwIGD := newFakeIGD(t, "WANIPConnection:1")
	evil := newFakeIGDAt(t, "WANIPConnection:1", "127.0.0.2")
	evil.external = "198.51.100.66"
	cases := []struct {
		name     string
		from     string // the SSDP responder's address
		location string
		ok       bool
	}{
		{"gateway names itself", "127.0.0.1", gwIGD.srv.URL + "/rootDesc.xml", true},
		{"gateway names another host", "127.0.0.1", evil.srv.URL + "/rootDesc.xml", false},
		{"neighbour names itself", "127.0.0.2", evil.srv.URL + "/rootDesc.xml", false},
		{"neighbour names the gateway", "127.0.0.2", gwIGD.srv.URL + "/rootDesc.xml", false},
		{"gateway names a host name", "127.0.0.1", strings.Replace(gwIGD.srv.URL, "127.0.0.1", "localhost", 1) + "/rootDesc.xml", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gwBefore, evilBefore := gwIGD.served(), evil.served()
			s := newFakeSSDP(t, tc.from, tc.location)
			res, err := Probe(t.Context(), ssdpConfig(s))
			if err != nil {
				t.Fatal(err)
			}
			if s.searched() == 0 {
				t.Fatal("the fake SSDP responder got no M-SEARCH")
			}
			if evil.served() != evilBefore {
				t.Errorf("the client fetched %d URLs from the neighbour's IGD", evil.served()-evilBefore)
			}
			if tc.ok {
				if !res.UPnP || res.External != netip.MustParseAddr("203.0.113.9") {
					t.Fatalf("probe = %+v, want the gateway's IGD", res)
				}
				return
			}
			if res.UPnP || gwIGD.served() != gwBefore {
				t.Fatalf("answer taken: probe = %+v, gateway IGD served %d", res, gwIGD.served()-gwBefore)
			}
			t.Logf("refused: %s", res.Errors[UPnP])
		})
	}
}

// The description and the control URL are fetched from the gateway only:
// a redirect, a URLBase or a control URL on another host is refused.
func TestUPnPStaysOnGateway(t *testing.T) {
	evil := newFakeIGDAt(t, "WANIPConnection:1", "127.0.0.2")
	evil.external = "198.51.100.66"
	descAt := func(base, control string) string {
		d := strings.Replace(fakeDesc, "<controlURL>/ctl</controlURL>", "<controlURL>"+control+"</controlURL>", 1)
		if base != "" {
			d = strings.Replace(d, "<specVersion>", "<URLBase>"+base+"</URLBase><specVersion>", 1)
		}
		return d
	}
	cases := []struct {
		name string
		set  func(g *fakeIGD)
	}{
		{"redirect", func(g *fakeIGD) { g.redirectTo = evil.srv.URL }},
		{"URLBase elsewhere", func(g *fakeIGD) { g.desc = descAt(evil.srv.URL+"/", "/ctl") }},
		{"control URL elsewhere", func(g *fakeIGD) { g.desc = descAt("", evil.srv.URL+"/ctl") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := evil.served()
			g := newFakeIGD(t, "WANIPConnection:1")
			tc.set(g)
			c := NewClient(g.config())
			m, err := c.Map(t.Context(), 41000)
			if err == nil {
				t.Fatalf("mapped %+v through another host", m)
			}
			if n := evil.served() - before; n != 0 {
				t.Fatalf("the other host served %d requests", n)
			}
			t.Logf("refused: %v", err)
		})
	}
	// A redirect of the SOAP call, after a good description.
	g := newFakeIGD(t, "WANIPConnection:1")
	c := NewClient(g.config())
	if _, err := Probe(t.Context(), g.config()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.redirectTo = evil.srv.URL
	g.mu.Unlock()
	before := evil.served()
	if m, err := c.Map(t.Context(), 41000); err == nil {
		t.Fatalf("mapped %+v through a SOAP redirect", m)
	}
	if n := evil.served() - before; n != 0 {
		t.Fatalf("SOAP redirect followed: the other host served %d requests", n)
	}
}

// NAT-PMP and PCP answers count only from the gateway's address and port.
func TestPMPAnswerOnlyFromGateway(t *testing.T) {
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		t.Run(from, func(t *testing.T) {
			f := newFakePMP(t)
			spoof, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
			if err != nil {
				t.Fatal(err)
			}
			defer spoof.Close()
			f.set(func(f *fakePMP) { f.answerFrom = spoof })
			res, err := Probe(t.Context(), f.config())
			if err != nil {
				t.Fatal(err)
			}
			if res.PCP || res.NATPMP {
				t.Fatalf("answers from %s taken for the gateway's: %+v", spoof.LocalAddr(), res)
			}
			f.set(func(f *fakePMP) {
				if f.requests == 0 {
					t.Error("the fake gateway got no request")
				}
			})
		})
	}
}

// What a gateway sends ends up in logs and status only cut short.
func TestGatewayErrorTextBounded(t *testing.T) {
	g := newFakeIGD(t, "WANIPConnection:1")
	g.external = strings.Repeat("x", 10000)
	_, err := NewClient(g.config()).Map(t.Context(), 41000)
	if err == nil {
		t.Fatal("mapped with a garbage external address")
	}
	if len(err.Error()) > 2*maxErrorText {
		t.Fatalf("error text is %d bytes long", len(err.Error()))
	}
}

// Announcements (which anyone on the LAN can forge with the gateway's
// address) get through once per announceGap, yet a gateway's repeated
// burst still gets later ones through.
func TestAnnounceGate(t *testing.T) {
	var g announceGate
	t0 := time.Unix(1000, 0)
	passed := 0
	for i := range 1000 { // a flood: 1000 in one second
		if g.allow(t0.Add(time.Duration(i) * time.Millisecond)) {
			passed++
		}
	}
	if passed != 1 {
		t.Fatalf("%d of a flood of 1000 announcements in 1 s got through, want 1", passed)
	}
	if !g.allow(t0.Add(7750 * time.Millisecond)) {
		t.Fatal("the gateway's announcement 7.75 s into its burst was held back")
	}
}

// A default route with no router (0.0.0.0) or one to this host is no
// gateway: nothing is sent to this host's own port 5351.
func TestCheckGateway(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "224.0.0.1"} {
		if _, err := checkGateway(netip.MustParseAddr(s)); !errors.Is(err, ErrNoGateway) {
			t.Errorf("checkGateway(%s) = %v, want ErrNoGateway", s, err)
		}
	}
	if a, err := checkGateway(netip.MustParseAddr("10.1.0.1")); err != nil || a.String() != "10.1.0.1" {
		t.Errorf("checkGateway(10.1.0.1) = %v, %v", a, err)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// netcheckReport is the part of `meshvpn netcheck --json` the test reads.
type netcheckReport struct {
	UDP            bool   `json:"udp"`
	PublicIP       string `json:"public_ip"`
	PublicEndpoint string `json:"public_endpoint"`
	Varies         *bool  `json:"mapping_varies_by_destination"`
	Mapping        string `json:"mapping"`
	Filtering      string `json:"filtering"`
	NATType        string `json:"nat_type"`
	Reason         string `json:"reason"`
	PortMapping    struct {
		Probed   bool   `json:"probed"`
		UPnP     bool   `json:"upnp"`
		NATPMP   bool   `json:"nat_pmp"`
		PCP      bool   `json:"pcp"`
		Protocol string `json:"protocol"`
		External string `json:"external"`
	} `json:"port_mapping"`
	Servers []struct {
		Addr      string   `json:"addr"`
		Kind      string   `json:"kind"`
		LatencyMs *float64 `json:"latency_ms"`
	} `json:"servers"`
}

// TestNetcheckNATTypes runs `meshvpn netcheck --json` (no agent running) on
// a host of a site of every NAT kind and checks that it names the kind, with
// the mapping and filtering behaviours behind the name. The coordinator's
// STUN server has a second IP and port (meshlab.CoordinatorAltSTUN), as
// the filtering tests need.
func TestNetcheckNATTypes(t *testing.T) {
	lab, coord := newLab(t)
	cases := []struct {
		kind               natlab.Kind
		nat                string
		mapping, filtering string
		varies             bool
	}{
		{natlab.None, "none", "endpoint-independent", "endpoint-independent", false},
		{natlab.FullCone, "full cone", "endpoint-independent", "endpoint-independent", false},
		{natlab.RestrictedCone, "restricted cone", "endpoint-independent", "address-dependent", false},
		{natlab.PortRestricted, "port-restricted cone", "endpoint-independent", "address-and-port-dependent", false},
		{natlab.Symmetric, "symmetric", "address-and-port-dependent", "address-and-port-dependent", true},
	}
	// Build every site first, so the checks below run back to back.
	sites := map[natlab.Kind]*natlab.Site{}
	for _, c := range cases {
		s, err := lab.AddSite("nc-"+c.kind.String(), c.kind)
		if err != nil {
			t.Fatal(err)
		}
		sites[c.kind] = s
	}
	for _, c := range cases {
		t.Run(c.kind.String(), func(t *testing.T) {
			site := sites[c.kind]
			start := time.Now()
			rep, raw := runNetcheck(t, coord, site.Host)
			t.Logf("%s: netcheck took %v: nat_type %q, mapping %s, filtering %s, public %s",
				c.kind, time.Since(start).Round(time.Millisecond), rep.NATType, rep.Mapping, rep.Filtering, rep.PublicEndpoint)
			if rep.NATType != c.nat || rep.Mapping != c.mapping || rep.Filtering != c.filtering {
				t.Fatalf("%s site: nat_type %q mapping %q filtering %q, want %q %q %q\n%s",
					c.kind, rep.NATType, rep.Mapping, rep.Filtering, c.nat, c.mapping, c.filtering, raw)
			}
			if !rep.UDP {
				t.Errorf("udp false")
			}
			if rep.Varies == nil || *rep.Varies != c.varies {
				t.Errorf("mapping_varies_by_destination %v, want %v", rep.Varies, c.varies)
			}
			wantIP := site.Host.IP.String()
			if site.Router != nil {
				wantIP = site.Router.IP.String()
			}
			if rep.PublicIP != wantIP || !strings.HasPrefix(rep.PublicEndpoint, wantIP+":") {
				t.Errorf("public %s (%s), want the address %s", rep.PublicIP, rep.PublicEndpoint, wantIP)
			}
			// These routers speak no port-mapping protocol.
			if pm := rep.PortMapping; !pm.Probed || pm.UPnP || pm.NATPMP || pm.PCP || pm.External != "" {
				t.Errorf("port_mapping %+v: want probed, nothing offered", pm)
			}
			latency := map[string]bool{}
			for _, s := range rep.Servers {
				if s.LatencyMs != nil && *s.LatencyMs > 0 {
					latency[s.Kind+" "+s.Addr] = true
				}
			}
			for _, want := range []string{"stun " + meshlab.CoordinatorIP + ":3478", "stun-alternate " + meshlab.CoordinatorAltSTUN} {
				if !latency[want] {
					t.Errorf("no latency for %s\n%s", want, raw)
				}
			}
		})
	}
}

// TestNetcheckBadCoordinator checks that netcheck fails with a clear
// message and a non-zero exit when the coordinator cannot be asked.
func TestNetcheckBadCoordinator(t *testing.T) {
	lab, coord := newLab(t)
	site, err := lab.AddSite("ncbad", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ url, want string }{
		{"http://" + meshlab.CoordinatorIP + ":8081", "connection refused"},
		{"ftp://" + meshlab.CoordinatorIP, "scheme must be http or https"},
		{"http://" + meshlab.CoordinatorIP + ":8080/nope", "HTTP 404"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err := site.Host.Run(ctx, coord.Bins.Agent, "netcheck", "--json", "--coordinator", c.url, "--timeout", "10s")
		cancel()
		if err == nil {
			t.Errorf("%s: exit 0, output %q", c.url, out)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "exit status 1") {
			t.Errorf("%s: %v; want exit status 1 and %q", c.url, err, c.want)
		}
	}
}

// runNetcheck runs `meshvpn netcheck --json` on h against the lab's
// coordinator and returns the parsed report and the raw output.
func runNetcheck(t *testing.T, coord *meshlab.Coordinator, h *natlab.Host) (netcheckReport, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := h.Run(ctx, coord.Bins.Agent, "netcheck", "--json", "--coordinator", coord.URL, "--timeout", "30s")
	if err != nil {
		t.Fatal(err)
	}
	var rep netcheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("netcheck --json: %v in %q", err, out)
	}
	return rep, out
}

// TestNetcheckTLS asks a coordinator that serves HTTPS with a lab CA: with
// --ca-file the check runs, without it netcheck says the certificate is not
// trusted and exits 1.
func TestNetcheckTLS(t *testing.T) {
	lab, coord := newLabWith(t, meshlab.StartCoordinatorTLS)
	site, err := lab.AddSite("nctls", natlab.FullCone)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := site.Host.Run(ctx, coord.Bins.Agent, "netcheck", "--json", "--coordinator", coord.URL, "--ca-file", coord.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	var rep netcheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("netcheck --json: %v in %q", err, out)
	}
	if rep.NATType != "full cone" {
		t.Fatalf("nat_type %q over HTTPS, want full cone\n%s", rep.NATType, out)
	}
	_, err = site.Host.Run(ctx, coord.Bins.Agent, "netcheck", "--coordinator", coord.URL)
	if err == nil || !strings.Contains(err.Error(), "not trusted (give its CA with --ca-file)") || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("without --ca-file: %v; want exit 1 and a hint to --ca-file", err)
	}
}

// TestNetcheckPortMapping runs netcheck behind a symmetric-NAT router with
// real miniupnpd: it must name the protocols the router speaks and the
// address a mapping gets, and leave no mapping behind.
func TestNetcheckPortMapping(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	stun, err := lab.AddCoturnSTUN("stun", "203.0.113.40", "203.0.113.41")
	if err != nil {
		t.Fatal(err)
	}
	site, err := lab.AddSite("nc-upnp", natlab.Symmetric)
	if err != nil {
		t.Fatal(err)
	}
	upnpd, err := site.StartMiniUPnPd(ctx, stun, natlab.UPnPAndPMP)
	if err != nil {
		t.Fatal(err)
	}
	rep, raw := runNetcheck(t, coord, site.Host)
	pm := rep.PortMapping
	t.Logf("port_mapping: %+v", pm)
	if !pm.Probed || !pm.UPnP || !pm.NATPMP || !pm.PCP {
		t.Fatalf("port_mapping %+v: want UPnP, NAT-PMP and PCP offered\n%s", pm, raw)
	}
	if pm.Protocol == "" || !strings.HasPrefix(pm.External, site.Router.IP.String()+":") {
		t.Errorf("mapping %s %q: want one on the router's address %s", pm.Protocol, pm.External, site.Router.IP)
	}
	if rep.NATType != "symmetric" {
		t.Errorf("nat_type %q, want symmetric (the router's own NAT)", rep.NATType)
	}
	left, err := upnpd.Redirects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("netcheck left forwards on the router: %v", left)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"strconv"
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
// a host of a site of every NAT kind, on both router variants (with and
// without an input firewall), and checks that it names the kind, with the
// mapping and filtering behaviours behind the name. The coordinator's STUN
// server has a second IP and port (meshlab.CoordinatorAltSTUN), as the
// filtering tests need.
func TestNetcheckNATTypes(t *testing.T) {
	lab, coord := newLab(t)
	type want struct {
		nat                string
		mapping, filtering string
		varies             *bool
	}
	no, yes := new(false), new(true)
	cases := []struct {
		kind natlab.Kind
		want
	}{
		{natlab.None, want{"none", "endpoint-independent", "endpoint-independent", no}},
		{natlab.FullCone, want{"full cone", "endpoint-independent", "endpoint-independent", no}},
		{natlab.RestrictedCone, want{"restricted cone", "endpoint-independent", "address-dependent", no}},
		{natlab.PortRestricted, want{"port-restricted cone", "endpoint-independent", "address-and-port-dependent", no}},
		{natlab.DoubleNAT, want{"port-restricted cone", "endpoint-independent", "address-and-port-dependent", no}},
		{natlab.Symmetric, want{"symmetric", "address-and-port-dependent", "address-and-port-dependent", yes}},
		{natlab.UDPBlocked, want{"udp blocked", "unknown", "unknown", nil}},
	}
	// Build every site first, so the checks below run back to back. A
	// public host has no router, so no variant.
	type key struct {
		kind    natlab.Kind
		variant natlab.Variant
	}
	sites := map[key]*natlab.Site{}
	for _, v := range natlab.Variants {
		for _, c := range cases {
			if c.kind == natlab.None && v != natlab.InputDrop {
				continue
			}
			s, err := lab.AddSiteSpec("nc-"+c.kind.String()+"-"+v.String(), natlab.SiteSpec{Kind: c.kind, Variant: v})
			if err != nil {
				t.Fatal(err)
			}
			sites[key{c.kind, v}] = s
		}
	}
	for _, v := range natlab.Variants {
		t.Run(v.String(), func(t *testing.T) {
			for _, c := range cases {
				site := sites[key{c.kind, v}]
				if site == nil {
					continue
				}
				t.Run(c.kind.String(), func(t *testing.T) {
					checkNetcheck(t, coord, site, c.nat, c.mapping, c.filtering, c.varies)
				})
			}
		})
	}
}

// checkNetcheck runs netcheck on site's host and checks its verdict.
func checkNetcheck(t *testing.T, coord *meshlab.Coordinator, site *natlab.Site, nat, mapping, filtering string, varies *bool) {
	start := time.Now()
	rep, raw := runNetcheck(t, coord, site.Host)
	t.Logf("%s/%s: netcheck took %v: nat_type %q, mapping %s, filtering %s, public %s",
		site.Kind, site.Variant, time.Since(start).Round(time.Millisecond), rep.NATType, rep.Mapping, rep.Filtering, rep.PublicEndpoint)
	if rep.NATType != nat || rep.Mapping != mapping || rep.Filtering != filtering {
		t.Fatalf("%s site (%s): nat_type %q mapping %q filtering %q, want %q %q %q\n%s",
			site.Kind, site.Variant, rep.NATType, rep.Mapping, rep.Filtering, nat, mapping, filtering, raw)
	}
	if (rep.Varies == nil) != (varies == nil) || varies != nil && *rep.Varies != *varies {
		t.Errorf("mapping_varies_by_destination %v, want %v", fmtBool(rep.Varies), fmtBool(varies))
	}
	// These routers speak no port-mapping protocol.
	if pm := rep.PortMapping; !pm.Probed || pm.UPnP || pm.NATPMP || pm.PCP || pm.External != "" {
		t.Errorf("port_mapping %+v: want probed, nothing offered", pm)
	}
	if site.Kind == natlab.UDPBlocked {
		if rep.UDP || rep.PublicIP != "" {
			t.Errorf("udp %v, public %q: want no UDP and no public address", rep.UDP, rep.PublicIP)
		}
		return
	}
	if !rep.UDP {
		t.Errorf("udp false")
	}
	wantIP := site.PublicIP().String()
	if rep.PublicIP != wantIP || !strings.HasPrefix(rep.PublicEndpoint, wantIP+":") {
		t.Errorf("public %s (%s), want the address %s", rep.PublicIP, rep.PublicEndpoint, wantIP)
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
}

func fmtBool(b *bool) string {
	if b == nil {
		return "null"
	}
	return strconv.FormatBool(*b)
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

// TestAgentNATProbe checks the agent's own NAT probe, which tells peers
// whether this node is behind a symmetric NAT (status: self.nat), on every
// NAT kind and both router variants: only a symmetric NAT may be called
// symmetric. The agents of one variant run together, so their peers' ICE
// checks reach the routers meanwhile, as in a real mesh.
func TestAgentNATProbe(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	want := map[natlab.Kind]string{
		natlab.FullCone:       "",
		natlab.RestrictedCone: "",
		natlab.PortRestricted: "",
		natlab.DoubleNAT:      "",
		natlab.Symmetric:      "symmetric",
		natlab.UDPBlocked:     "udp-blocked",
	}
	kinds := []natlab.Kind{natlab.FullCone, natlab.RestrictedCone, natlab.PortRestricted, natlab.DoubleNAT, natlab.Symmetric, natlab.UDPBlocked}
	for _, v := range natlab.Variants {
		t.Run(v.String(), func(t *testing.T) {
			var agents []*meshlab.Agent
			for _, k := range kinds {
				name := "ap-" + k.String() + "-" + v.String()
				site, err := lab.AddSiteSpec(name, natlab.SiteSpec{Kind: k, Variant: v})
				if err != nil {
					t.Fatal(err)
				}
				a, err := meshlab.NewAgent(coord, site.Host, name)
				if err != nil {
					t.Fatal(err)
				}
				if err := a.Start(key); err != nil {
					t.Fatal(err)
				}
				agents = append(agents, a)
			}
			defer func() {
				for _, a := range agents {
					a.Stop(5 * time.Second)
				}
			}()
			for i, a := range agents {
				if err := a.Proc.WaitLog("local network", 60*time.Second); err != nil {
					t.Fatalf("%s: no NAT probe result: %v", a.Name, err)
				}
				// A probe with one server tells nothing: it must have
				// asked the STUN server's primary and alternate address.
				if !strings.Contains(a.Proc.Log(), "servers=2") {
					t.Errorf("%s: probe did not ask two STUN addresses:\n%s", a.Name, a.Proc.Log())
				}
				st, err := a.Status(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				probe := ""
				for _, line := range strings.Split(a.Proc.Log(), "\n") {
					if strings.Contains(line, "local network") {
						probe = line
					}
				}
				t.Logf("%s/%s: agent status self.nat %q; %s", kinds[i], v, st.Self.NAT, probe)
				if st.Self.NAT != want[kinds[i]] {
					t.Errorf("%s/%s: agent says nat %q, want %q", kinds[i], v, st.Self.NAT, want[kinds[i]])
				}
			}
		})
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// netcheck6Report is the IPv6 part of `meshvpn netcheck --json`.
type netcheck6Report struct {
	netcheckReport
	IPv4Unavailable string `json:"ipv4_unavailable"`
	IPv6            struct {
		Tested         bool   `json:"tested"`
		UDP            bool   `json:"udp"`
		PublicIP       string `json:"public_ip"`
		PublicEndpoint string `json:"public_endpoint"`
		Translated     bool   `json:"translated"`
		Reason         string `json:"reason"`
	} `json:"ipv6"`
}

// TestNetcheckIPv6 runs `meshvpn netcheck` in a dual-stack lab whose
// coordinator has a public IPv6 address: on a dual-stack site behind a
// symmetric IPv4 NAT it reports the NAT as before and the host's own global
// IPv6 address as its public IPv6 endpoint (routed, not translated); on an
// IPv6-only site, asking the coordinator over IPv6, it reports the IPv6
// endpoint and says IPv4 is unavailable. The text output says the same.
func TestNetcheckIPv6(t *testing.T) {
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{IPv6: true})
	})
	dual, err := lab.AddSiteSpec("nc6-dual", natlab.SiteSpec{Kind: natlab.Symmetric, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	only, err := lab.AddSiteSpec("nc6-only", natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6Only: true})
	if err != nil {
		t.Fatal(err)
	}

	run := func(h *natlab.Host, url string, asJSON bool) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		args := []string{"netcheck", "--coordinator", url, "--timeout", "30s"}
		if asJSON {
			args = append(args, "--json")
		}
		return h.Run(ctx, coord.Bins.Agent, args...)
	}
	check := func(h *natlab.Host, url string) netcheck6Report {
		t.Helper()
		start := time.Now()
		out, err := run(h, url, true)
		if err != nil {
			t.Fatal(err)
		}
		var rep netcheck6Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("netcheck --json: %v in %q", err, out)
		}
		t.Logf("%s: netcheck took %v: nat %q, public %s, ipv6 %+v, ipv4_unavailable %q",
			h.Name, time.Since(start).Round(time.Millisecond), rep.NATType, rep.PublicEndpoint, rep.IPv6, rep.IPv4Unavailable)
		v6 := rep.IPv6
		ap, perr := netip.ParseAddrPort(v6.PublicEndpoint)
		if !v6.Tested || !v6.UDP || perr != nil || ap.Addr() != h.IP6 || v6.Translated {
			t.Errorf("%s: ipv6 %+v, want the host's own %v, not translated\n%s", h.Name, v6, h.IP6, out)
		}
		stun6 := false
		for _, s := range rep.Servers {
			stun6 = stun6 || s.Kind == "stun-ipv6" && strings.Contains(s.Addr, meshlab.CoordinatorIPv6) && s.LatencyMs != nil
		}
		if !stun6 {
			t.Errorf("%s: no answering stun-ipv6 server %s\n%s", h.Name, meshlab.CoordinatorIPv6, out)
		}
		return rep
	}

	rep := check(dual.Host, coord.URL)
	if rep.NATType != "symmetric" || rep.PublicIP != dual.PublicIP().String() || rep.IPv4Unavailable != "" {
		t.Errorf("dual-stack site: nat %q public %q ipv4_unavailable %q; want symmetric from %v", rep.NATType, rep.PublicIP, rep.IPv4Unavailable, dual.PublicIP())
	}

	rep = check(only.Host, meshlab.CoordinatorURLIPv6)
	if rep.UDP || rep.PublicIP != "" || !strings.Contains(rep.IPv4Unavailable, "no IPv4 route") {
		t.Errorf("IPv6-only site: udp %v public %q ipv4_unavailable %q; want IPv4 unavailable for want of a route", rep.UDP, rep.PublicIP, rep.IPv4Unavailable)
	}
	out, err := run(only.Host, meshlab.CoordinatorURLIPv6, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("netcheck on the IPv6-only host:\n%s", out)
	for _, want := range []string{"IPv4:", "unavailable", "Public IPv6 endpoint:", only.Host.IP6.String(), "no NAT"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

// TestDualStackPrefersIPv6 is the path preference of the IPv6 underlay
// (agent/ice6.go): two agents on dual-stack port-restricted sites, which
// could also go direct over IPv4, go direct over IPv6; and a dual-stack
// agent still goes direct over IPv4 to an agent whose site has no IPv6.
// (Before the agent spoke IPv6, this test's first pair went over IPv4.)
func TestDualStackPrefersIPv6(t *testing.T) {
	lab, coord := newIPv6Lab(t)
	key := authKey(t, coord, true)
	ds1 := ipv6Agent(t, lab, coord, key, "ds1", natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6: true})
	ds2 := ipv6Agent(t, lab, coord, key, "ds2", natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6: true})
	v4 := ipv6Agent(t, lab, coord, key, "v4", natlab.SiteSpec{Kind: natlab.PortRestricted})
	if err := meshlab.WaitOnline(t.Context(), []*meshlab.Agent{ds1, ds2, v4}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	directPair6(t, ds1, ds2)
	checkDirectPair(t, ds1, v4, overlayIP(t, v4))
}

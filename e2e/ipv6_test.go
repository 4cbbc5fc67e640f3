package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// IPv6 underlay (issue 14): agents in a dual-stack lab whose coordinator
// serves STUN and TURN on IPv6 too (meshlab.CoordinatorIPv6). Site routers
// NAT IPv4 and pass IPv6 through a stateful firewall.

// newIPv6Lab is a dual-stack lab with its coordinator.
func newIPv6Lab(t testing.TB) (*natlab.Lab, *meshlab.Coordinator) {
	return newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{IPv6: true})
	})
}

// ipv6Agent starts an agent called name on a new site of spec; an
// IPv6-only one reaches the coordinator at its IPv6 address.
func ipv6Agent(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, key, name string, spec natlab.SiteSpec) *meshlab.Agent {
	t.Helper()
	site, err := lab.AddSiteSpec(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, site.Host, name)
	if err != nil {
		t.Fatal(err)
	}
	if spec.IPv6Only {
		a.URL = meshlab.CoordinatorURLIPv6
	}
	if err := a.Up(t.Context(), key, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return a
}

// ipv6Pair starts two agents on sites of the given specs and waits until
// each sees the other online.
func ipv6Pair(t *testing.T, specA, specB natlab.SiteSpec) (a, b *meshlab.Agent, coord *meshlab.Coordinator) {
	t.Helper()
	lab, coord := newIPv6Lab(t)
	key := authKey(t, coord, true)
	a = ipv6Agent(t, lab, coord, key, "v6a", specA)
	b = ipv6Agent(t, lab, coord, key, "v6b", specB)
	if err := meshlab.WaitOnline(t.Context(), []*meshlab.Agent{a, b}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return a, b, coord
}

// TestIPv6DirectSymmetricNAT: two hosts behind symmetric IPv4 NATs (no
// port mapping; over IPv4 they can only relay) that both have IPv6 go
// direct over IPv6, each on the other's own global address. Status says
// so, and the packets prove it: the WireGuard data of the echoes crosses
// a's router to and from b's IPv6 address.
func TestIPv6DirectSymmetricNAT(t *testing.T) {
	spec := natlab.SiteSpec{Kind: natlab.Symmetric, IPv6: true}
	a, b, coord := ipv6Pair(t, spec, spec)
	directPair6(t, a, b)
	text, err := a.Host.Run(t.Context(), coord.Bins.Agent, "status", "--socket", a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.AddrPortFrom(b.Host.IP6, 0).String()
	want = want[:strings.LastIndex(want, ":")+1] // "[2001:db8:…]:"
	if !strings.Contains(text, want) || !strings.Contains(text, "ipv6") {
		t.Errorf("status text lacks the IPv6 endpoint %s… and the family:\n%s", want, text)
	}
	t.Logf("status of %s:\n%s", a.Name, text)
}

// TestIPv6OnlyToDualStackDirect: a host with IPv6 only (its IPv4 reaches
// nothing past its LAN; it joins over the coordinator's IPv6 address)
// reaches a dual-stack host behind a port-restricted NAT directly, over
// IPv6.
func TestIPv6OnlyToDualStackDirect(t *testing.T) {
	a, b, _ := ipv6Pair(t,
		natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6Only: true},
		natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6: true})
	directPair6(t, a, b)
}

// TestIPv6OnlyToIPv4OnlyRelay: a host with IPv6 only and a host with IPv4
// only have no family in common; they reach each other through the
// coordinator's relay, the IPv6-only one over IPv6 with an IPv4 relayed
// address (RFC 6156) the IPv4-only one can reach.
func TestIPv6OnlyToIPv4OnlyRelay(t *testing.T) {
	a, b, _ := ipv6Pair(t,
		natlab.SiteSpec{Kind: natlab.PortRestricted, IPv6Only: true},
		natlab.SiteSpec{Kind: natlab.PortRestricted})
	ctx := t.Context()
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 30*time.Second); err != nil {
		t.Fatalf("overlay ping %s -> %s failed: %v\n%s", a.Name, b.Name, err, out)
	}
	views := map[string]*meshlab.PeerStatus{}
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p, err := meshlab.WaitPath(ctx, side.from, side.to.Name, "relay", 20*time.Second)
		if err != nil {
			t.Fatalf("%s -> %s: %v", side.from.Name, side.to.Name, err)
		}
		t.Logf("%s -> %s: path=%s (%s) family=%s relay=%+v endpoint=%s", side.from.Name, side.to.Name, p.Path, p.Reason, p.Family, p.Relay, p.Endpoint)
		if p.Relay == nil || endpointHost(p.Relay.Allocation) != meshlab.CoordinatorIP {
			t.Errorf("%s -> %s: relay %+v, want an IPv4 allocation on %s", side.from.Name, side.to.Name, p.Relay, meshlab.CoordinatorIP)
		}
		views[side.from.Name] = p
	}
	if p := views[a.Name]; p.Relay == nil || endpointHost(p.Relay.Server) != meshlab.CoordinatorIPv6 || p.Family != "ipv6" {
		t.Errorf("%s (IPv6 only): relay %+v family %q, want the relay at %s over ipv6", a.Name, p.Relay, p.Family, meshlab.CoordinatorIPv6)
	}
	if p := views[b.Name]; p.Relay == nil || endpointHost(p.Relay.Server) != meshlab.CoordinatorIP || p.Family != "ipv4" {
		t.Errorf("%s (IPv4 only): relay %+v family %q, want the relay at %s over ipv4", b.Name, p.Relay, p.Family, meshlab.CoordinatorIP)
	}
	// No IPv4 route is no blocked UDP: the IPv6-only host must not tell
	// its peers so, nor they show it as the reason.
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.NAT == "udp-blocked" || strings.Contains(views[b.Name].Reason, "UDP blocked") {
		t.Errorf("%s (IPv6 only): nat %q, %s's reason %q; want no 'UDP blocked'", a.Name, st.Self.NAT, b.Name, views[b.Name].Reason)
	}
	const echoes = 10
	res, err := pingCount(ctx, a, ipB, echoes, "0.2")
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != echoes {
		t.Fatalf("overlay ping %s -> %s through the relay: %d of %d replies\n%s", a.Name, b.Name, res.Received, res.Sent, res.Out)
	}
}

// TestPublicDualStackPrefersIPv6: two public hosts with both families
// have host/host pairs over IPv4 and over IPv6 of equal types; the IPv6
// one wins (agent/ice6.go, preferIPv6). Before that tie-break IPv4 won in
// 1 of 4 runs.
func TestPublicDualStackPrefersIPv6(t *testing.T) {
	lab, coord := newIPv6Lab(t)
	key := authKey(t, coord, true)
	var agents []*meshlab.Agent
	for _, h := range []struct{ name, ip string }{{"pub6a", "203.0.113.31"}, {"pub6b", "203.0.113.32"}} {
		host, err := lab.AddPublicHost(h.name, h.ip)
		if err != nil {
			t.Fatal(err)
		}
		a, err := meshlab.NewAgent(coord, host, h.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Up(t.Context(), key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	if err := meshlab.WaitOnline(t.Context(), agents, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	directPair6(t, agents[0], agents[1])
}

// directPair6 pings b from a over the overlay, waits until both report a
// direct path on the other's global IPv6 address (family ipv6, no relay
// candidate), then pings again and checks that every echo came back over
// it: a's router (when a has one) counts WireGuard data to and from b's
// IPv6 address, and both WireGuard devices count the bytes.
func directPair6(t *testing.T, a, b *meshlab.Agent) {
	t.Helper()
	ctx := t.Context()
	ipB := overlayIP(t, b)
	start := time.Now()
	if out, err := pingUntil(ctx, a, ipB, 30*time.Second); err != nil {
		t.Fatalf("overlay ping %s -> %s (%s) failed: %v\n%s", a.Name, b.Name, ipB, err, out)
	}
	views := map[string]string{}
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		want := side.to.Host.IP6.String()
		p, err := meshlab.WaitPeer(ctx, side.from, side.to.Name, 20*time.Second, func(p *meshlab.PeerStatus) error {
			if p.Path != "direct" || endpointHost(p.Endpoint) != want {
				return fmt.Errorf("%s -> %s: path %s (%s) on %q, want direct on [%s]", side.from.Name, side.to.Name, p.Path, p.Reason, p.Endpoint, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s -> %s after %v: path=%s family=%s local=%s remote=%s endpoint=%s rtt=%.2fms", side.from.Name, side.to.Name,
			time.Since(start).Round(time.Millisecond), p.Path, p.Family, p.LocalType, p.RemoteType, p.Endpoint, p.RTTms)
		if p.Family != "ipv6" || p.LocalType == "" || p.LocalType == "relay" || p.RemoteType == "relay" {
			t.Errorf("%s -> %s: family %q, pair %q/%q; want ipv6 and no relay candidate", side.from.Name, side.to.Name, p.Family, p.LocalType, p.RemoteType)
		}
		views[side.from.Name] = p.Endpoint
	}

	var router *natlab.Host
	if r := a.Host.Site; r != nil && r.Router != nil {
		router = r.Router
	}
	endpoints := map[*meshlab.Agent]string{a: views[a.Name], b: views[b.Name]}
	proveByPackets(t, a, b, ipB, "IPv6", router, b.Host.IP6, endpoints)
}

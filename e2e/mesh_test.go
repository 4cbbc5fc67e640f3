package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// needsRelay reports whether no direct path can exist between two NATs:
// a symmetric NAT's fresh port per destination never matches what a
// port-restricted or symmetric peer has opened.
func needsRelay(a, b natlab.Kind) bool {
	if a == natlab.Symmetric {
		a, b = b, a
	}
	return b == natlab.Symmetric && (a == natlab.PortRestricted || a == natlab.Symmetric)
}

// TestMeshAllNATPairs joins eight agents, two behind each NAT kind, and
// checks every pair: an overlay ping gets through and both sides report a
// direct path, or - for the pairs no NAT traversal can join - a path
// through the coordinator's TURN relay over UDP.
func TestMeshAllNATPairs(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)

	kinds := []natlab.Kind{natlab.FullCone, natlab.RestrictedCone, natlab.PortRestricted, natlab.Symmetric}
	var agents []*meshlab.Agent
	kindOf := map[*meshlab.Agent]natlab.Kind{}
	for _, k := range kinds {
		for i := 1; i <= 2; i++ {
			a := addSiteAgent(t, lab, coord, fmt.Sprintf("%s%d", k, i), k)
			agents = append(agents, a)
			kindOf[a] = k
		}
	}
	start := time.Now()
	for _, a := range agents {
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(t.Context(), agents, 60*time.Second); err != nil {
		t.Fatalf("mesh did not come up: %v", err)
	}
	t.Logf("all %d agents see %d online peers after %v", len(agents), len(agents)-1, time.Since(start).Round(time.Millisecond))
	ips := map[*meshlab.Agent]string{}
	for _, a := range agents {
		ips[a] = overlayIP(t, a)
	}
	// The coordinator's view agrees: every node listed, online, at the
	// address its agent reports.
	nodes, err := coord.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, n := range nodes {
		if !n.Online {
			t.Errorf("nodes list: %s offline", n.Name)
		}
		byName[n.Name] = n.IP
	}
	for _, a := range agents {
		if byName[a.Name] != ips[a] {
			t.Errorf("nodes list: %s at %q, its agent says %s", a.Name, byName[a.Name], ips[a])
		}
	}
	if len(nodes) != len(agents) {
		t.Errorf("nodes list has %d nodes, want %d", len(nodes), len(agents))
	}

	for i, a := range agents {
		for _, b := range agents[i+1:] {
			t.Run(a.Name+"-"+b.Name, func(t *testing.T) {
				if needsRelay(kindOf[a], kindOf[b]) {
					if out, err := pingUntil(t.Context(), a, ips[b], 30*time.Second); err != nil {
						t.Fatalf("overlay ping %s -> %s over the relay failed: %v\n%s", a.Name, b.Name, err, out)
					}
					checkRelayed(t, a, b, "udp", meshlab.CoordinatorIP)
					checkRelayed(t, b, a, "udp", meshlab.CoordinatorIP)
					return
				}
				ab, ba := directPair(t, a, b, ips[b])
				// A symmetric NAT opens a new port toward each peer, so the
				// address its peer answers is never the STUN-observed one:
				// the peer must have learnt it from the checks (prflx).
				for _, v := range []struct {
					view *meshlab.PeerStatus
					of   *meshlab.Agent
				}{{ab, b}, {ba, a}} {
					if kindOf[v.of] == natlab.Symmetric && v.view.RemoteType != "prflx" {
						t.Errorf("remote candidate of symmetric-NAT %s is %s, want prflx", v.of.Name, v.view.RemoteType)
					}
				}
			})
		}
	}
}

// checkDirectPair checks that a and b talk directly, shown by packets: see
// directPair.
func checkDirectPair(t *testing.T, a, b *meshlab.Agent, ipB string) {
	t.Helper()
	directPair(t, a, b, ipB)
}

// directPair pings b from a over the overlay (the first replies may come
// over the relay), waits until both report a direct path on the other's
// public address with no relay candidate, then pings again and checks that
// every echo came back and that the packets went straight between the two
// public addresses: a's router counts them leaving for b's address and
// coming back from it, and both WireGuard devices count the bytes. It
// returns each side's view of the path (a's of b, b's of a).
func directPair(t *testing.T, a, b *meshlab.Agent, ipB string) (ab, ba *meshlab.PeerStatus) {
	ctx := t.Context()
	start := time.Now()
	out, err := pingUntil(ctx, a, ipB, 20*time.Second)
	if err != nil {
		t.Fatalf("overlay ping %s -> %s (%s) failed: %v\n%s", a.Name, b.Name, ipB, err, out)
	}
	pingTook := time.Since(start)
	views := map[*meshlab.Agent]*meshlab.PeerStatus{}
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p, err := meshlab.WaitPath(ctx, side.from, side.to.Name, "direct", 20*time.Second)
		if err != nil {
			t.Fatalf("%s -> %s: no direct path: %v", side.from.Name, side.to.Name, err)
		}
		t.Logf("%s -> %s: path=%s local=%s remote=%s endpoint=%s rtt=%.2fms",
			side.from.Name, side.to.Name, p.Path, p.LocalType, p.RemoteType, p.Endpoint, p.RTTms)
		if want := wanAddr(side.to.Host).String(); endpointHost(p.Endpoint) != want {
			t.Errorf("%s -> %s: direct path on endpoint %s, want %s's public address %s", side.from.Name, side.to.Name, p.Endpoint, side.to.Name, want)
		}
		for _, typ := range []string{p.LocalType, p.RemoteType} {
			if typ == "" || typ == "relay" {
				t.Errorf("%s -> %s: candidate pair %q/%q, want no relay candidate", side.from.Name, side.to.Name, p.LocalType, p.RemoteType)
				break
			}
		}
		views[side.from] = p
	}

	// Now by packets.
	var flow *flowCounter
	if r := a.Host.Site; r != nil && r.Router != nil && b.Host.Site != r {
		flow = countFlow(t, r.Router, wanAddr(b.Host))
	}
	aRx0, aTx0 := wgCounters(t, a, b.Name)
	bRx0, bTx0 := wgCounters(t, b, a.Name)
	const echoes = 10
	res, err := pingCount(ctx, a, ipB, echoes, "0.2")
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != echoes {
		t.Fatalf("overlay ping %s -> %s on the direct path: %d of %d replies (allowed loss 0)\n%s", a.Name, b.Name, res.Received, res.Sent, res.Out)
	}
	aRx1, aTx1 := wgCounters(t, a, b.Name)
	bRx1, bTx1 := wgCounters(t, b, a.Name)
	if aTx1-aTx0 < echoes*icmpBytes || aRx1-aRx0 < echoes*icmpBytes || bTx1-bTx0 < echoes*icmpBytes || bRx1-bRx0 < echoes*icmpBytes {
		t.Errorf("WireGuard bytes during %d echoes: %s +%d out +%d in, %s +%d out +%d in; want at least %d each",
			echoes, a.Name, aTx1-aTx0, aRx1-aRx0, b.Name, bTx1-bTx0, bRx1-bRx0, echoes*icmpBytes)
	}
	if flow != nil {
		out, in, err := flow.read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s's router: %d WireGuard data messages to %s, %d from it during %d echoes", a.Name, out, wanAddr(b.Host), in, echoes)
		if out < echoes || in < echoes {
			t.Errorf("direct flow %s <-> %s carried %d packets out, %d in; want at least the %d echoes each way", a.Name, wanAddr(b.Host), out, in, echoes)
		}
	}
	// Still direct, on the same endpoints, after the echoes.
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p := peerStatus(t, side.from, side.to.Name)
		if p.Path != "direct" || p.Endpoint != views[side.from].Endpoint {
			t.Errorf("%s -> %s after the echoes: %s (%s) at %s, want direct at %s", side.from.Name, side.to.Name, p.Path, p.Reason, p.Endpoint, views[side.from].Endpoint)
		}
	}
	t.Logf("ping %s -> %s ok after %v", a.Name, b.Name, pingTook.Round(time.Millisecond))
	return views[a], views[b]
}

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
				checkDirectPair(t, a, b, ips[b])
			})
		}
	}
}

// checkDirectPair pings b from a over the overlay and waits until both
// report a direct path, logging what each side chose.
func checkDirectPair(t *testing.T, a, b *meshlab.Agent, ipB string) {
	ctx := t.Context()
	start := time.Now()
	out, err := pingUntil(ctx, a, ipB, 20*time.Second)
	if err != nil {
		t.Fatalf("overlay ping %s -> %s (%s) failed: %v\n%s", a.Name, b.Name, ipB, err, out)
	}
	pingTook := time.Since(start)
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p, err := meshlab.WaitPath(ctx, side.from, side.to.Name, "direct", 20*time.Second)
		if p != nil {
			t.Logf("%s -> %s: path=%s local=%s remote=%s endpoint=%s rtt=%.2fms",
				side.from.Name, side.to.Name, p.Path, p.LocalType, p.RemoteType, p.Endpoint, p.RTTms)
		}
		if err != nil {
			t.Errorf("%s -> %s: no direct path: %v", side.from.Name, side.to.Name, err)
		}
	}
	t.Logf("ping %s -> %s ok after %v", a.Name, b.Name, pingTook.Round(time.Millisecond))
}

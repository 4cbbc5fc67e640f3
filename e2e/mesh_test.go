package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// meshSpots is where TestMeshAllNATPairs puts its agents, on each router
// variant: two behind each NAT kind, a second host behind
// portrestricted1's router, a double NAT, and a port-restricted and a
// symmetric site behind an ISP routing hop.
var meshSpots = []meshSpot{
	{name: "fullcone1", kind: natlab.FullCone},
	{name: "fullcone2", kind: natlab.FullCone},
	{name: "restrictedcone1", kind: natlab.RestrictedCone},
	{name: "restrictedcone2", kind: natlab.RestrictedCone},
	{name: "portrestricted1", kind: natlab.PortRestricted},
	{name: "portrestricted1b", kind: natlab.PortRestricted, behind: "portrestricted1"},
	{name: "portrestricted2", kind: natlab.PortRestricted},
	{name: "symmetric1", kind: natlab.Symmetric},
	{name: "symmetric2", kind: natlab.Symmetric},
	{name: "doublenat1", kind: natlab.DoubleNAT},
	{name: "portrestricted-isp", kind: natlab.PortRestricted, ispHop: true},
	{name: "symmetric-isp", kind: natlab.Symmetric, ispHop: true},
}

// needsRelay reports whether no direct path can exist between two spots:
// a symmetric NAT's fresh port per destination never matches what a
// port-restricted (double NAT included) or symmetric peer has opened,
// unless a birthday punch finds it (birthdayJoins).
func needsRelay(a, b meshSpot) bool {
	if a.kind == natlab.Symmetric {
		a, b = b, a
	}
	hard := a.kind == natlab.PortRestricted || a.kind == natlab.DoubleNAT || a.kind == natlab.Symmetric
	return b.kind == natlab.Symmetric && hard && !birthdayJoins(a, b)
}

// birthdayJoins: a symmetric site behind an ISP hop (which stops its
// low-TTL opening packets) and a port-restricted one, double NAT
// included, meet by birthday punching. Two symmetric sites never do.
func birthdayJoins(a, b meshSpot) bool {
	if b.kind == natlab.Symmetric {
		a, b = b, a
	}
	return a.kind == natlab.Symmetric && a.ispHop && (b.kind == natlab.PortRestricted || b.kind == natlab.DoubleNAT)
}

// meshRun is one lab of TestMeshAllNATPairs: every router in variant,
// each site right on the flat bridge or (wan) with 5-10 ms to it.
type meshRun struct {
	name    string
	variant natlab.Variant
	wan     bool
}

var meshRuns = []meshRun{
	{"inputdrop", natlab.InputDrop, false},
	{"inputaccept", natlab.InputAccept, false},
	{"inputaccept-wan", natlab.InputAccept, true},
}

// knownGaps are the pairs that do not reliably go direct yet, by run,
// each with the text its relay reason contains today. The test accepts
// either that relayed path or a direct one. Delete a pair's line once it
// is fixed: it must then go direct every run.
//
// All of them are two port-restricted sites (double NAT included) whose
// routers accept input and sit right on the lab's flat internet bridge,
// microseconds apart. The first packet that reaches either router before
// its host has sent to the sender leaves a stale conntrack entry there
// and moves that host's mapping, so neither order works, and no TTL can
// open one NAT without the packet reaching the other router
// (agent/punchorder.go). The synchronized open (agent/syncopen.go) sends
// both first packets at one instant, but its skew (0.1-1 ms measured on
// this busy machine) is far above the tens of microseconds between two
// routers on one bridge; the agents see as much (a signalling round trip
// under 3 ms) and skip it, checking at once as before. On the internet,
// with milliseconds between two NATs, it joins them: the inputaccept-wan
// run has no gaps. With an ISP hop in front of one side, the low-TTL opening
// joins them too (portrestricted-isp's pairs, TestPunchLowTTL).
var knownGaps = map[string]map[string]string{
	"inputdrop": {},
	"inputaccept": {
		// port-restricted <-> port-restricted behind different routers
		"portrestricted1-portrestricted2":  noDirectPair,
		"portrestricted1-doublenat1":       noDirectPair,
		"portrestricted1b-portrestricted2": noDirectPair,
		"portrestricted1b-doublenat1":      noDirectPair,
		"portrestricted2-doublenat1":       noDirectPair,
	},
	"inputaccept-wan": {},
}

// Relay reasons the known gaps show (agent/status.go).
const (
	noDirectPair = "no direct candidate pair worked"
)

// TestMeshAllNATPairs joins the agents of meshSpots in each run of
// meshRuns (a lab each, one after the other) and checks every pair: both
// sides report a direct path and an overlay ping gets through, or - for
// the pairs no NAT traversal can join, and the known gaps - a path
// through the coordinator's TURN relay over UDP. It logs a table of every
// pair with the time each direct path took from both agents being online.
func TestMeshAllNATPairs(t *testing.T) {
	for _, r := range meshRuns {
		t.Run(r.name, func(t *testing.T) {
			spots := meshSpots
			if r.wan {
				spots = withWAN(spots)
			}
			pairs := runMeshPairs(t, r.name, r.variant, onlySpots(t, spots), knownGaps[r.name])
			t.Log(syncSkewTable(pairs))
		})
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
// public address (its LAN address when both sit behind one router) with
// no relay candidate, then pings again and checks that every echo came
// back and that the packets went straight between the two public
// addresses: a's router counts them leaving for b's address and coming
// back from it, and both WireGuard devices count the bytes. It returns
// each side's view of the path (a's of b, b's of a).
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
		want := wanAddr(side.to.Host).String()
		if sameSite(side.from.Host, side.to.Host) {
			want = side.to.Host.IP.String()
		}
		if endpointHost(p.Endpoint) != want {
			t.Errorf("%s -> %s: direct path on endpoint %s, want %s's address %s", side.from.Name, side.to.Name, p.Endpoint, side.to.Name, want)
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
	var router *natlab.Host
	if r := a.Host.Site; r != nil && r.Router != nil && b.Host.Site != r {
		router = r.Router
	}
	endpoints := map[*meshlab.Agent]string{a: views[a].Endpoint, b: views[b].Endpoint}
	proveByPackets(t, a, b, ipB, "direct", router, wanAddr(b.Host), endpoints)
	t.Logf("ping %s -> %s ok after %v", a.Name, b.Name, pingTook.Round(time.Millisecond))
	return views[a], views[b]
}

// proveByPackets pings b from a (10 echoes, no loss allowed) on the path
// both already report as direct, and checks it by packets: both WireGuard
// devices count the echoes' bytes, a's router (when router is not nil)
// counts WireGuard data messages to and from peer, and afterwards both
// sides are still direct on the endpoints they showed before.
func proveByPackets(t *testing.T, a, b *meshlab.Agent, ipB, path string, router *natlab.Host, peer netip.Addr, endpoints map[*meshlab.Agent]string) {
	t.Helper()
	ctx := t.Context()
	var flow *flowCounter
	if router != nil {
		flow = countFlow(t, router, peer)
	}
	aRx0, aTx0 := wgCounters(t, a, b.Name)
	bRx0, bTx0 := wgCounters(t, b, a.Name)
	const echoes = 10
	res, err := pingCount(ctx, a, ipB, echoes, "0.2")
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != echoes {
		t.Fatalf("overlay ping %s -> %s on the %s path: %d of %d replies (allowed loss 0)\n%s", a.Name, b.Name, path, res.Received, res.Sent, res.Out)
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
		t.Logf("%s's router: %d WireGuard data messages to %s, %d from it during %d echoes", a.Name, out, peer, in, echoes)
		if out < echoes || in < echoes {
			t.Errorf("%s flow %s <-> %s carried %d packets out, %d in; want at least the %d echoes each way", path, a.Name, peer, out, in, echoes)
		}
	}
	// Still direct, on the same endpoints, after the echoes.
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p := peerStatus(t, side.from, side.to.Name)
		if p.Path != "direct" || p.Endpoint != endpoints[side.from] {
			t.Errorf("%s -> %s after the echoes: %s (%s) at %s, want direct at %s", side.from.Name, side.to.Name, p.Path, p.Reason, p.Endpoint, endpoints[side.from])
		}
	}
}

// sameSite tells whether a and b sit behind one router (so their direct
// path stays on its LAN).
func sameSite(a, b *natlab.Host) bool { return a.Site != nil && a.Site == b.Site }

package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestPeerPolicy(t *testing.T) {
	p := peerPolicy{own: netip.MustParseAddr("10.9.9.9"), allow: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}}
	for ip, want := range map[string]bool{
		"203.0.113.7": true, "8.8.8.8": true, "10.9.9.9": true, "192.168.7.3": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.1.1": false, "100.64.0.5": false, "0.0.0.0": false, "224.0.0.1": false, "255.255.255.255": false,
		"::1": false, "fe80::1": false,
	} {
		if got := p.permit(net.ParseIP(ip)); got != want {
			t.Errorf("permit(%s) = %v, want %v", ip, got, want)
		}
	}
}

// TestHostGuard: on the relay's own addresses only ports holding one of
// its allocations are reachable. A port in the relay range without an
// allocation is refused: the kernel's ephemeral ports overlap the range, so
// another socket of the host (a resolver's, a peer relay node's WireGuard
// socket) may sit there. Before the guard asked the allocation table it
// let the whole range through (the failure seen end to end:
// TestRelayReachesOnlyItsAllocationsOnItsHost).
func TestHostGuard(t *testing.T) {
	own := newOwnAddrs(netip.MustParseAddr("203.0.113.10"))
	own.iface.Store(&map[netip.Addr]bool{netip.MustParseAddr("198.51.100.10"): true})
	allocs := newRelayAllocs(time.Minute, func() int { return 10 })
	allocs.setLive(50000, true)
	allocs.setLive(50999, true)
	g := hostGuard{allocs: allocs, own: own}
	for addr, want := range map[string]bool{
		"203.0.113.10:50000": true, "203.0.113.10:50999": true, // allocations on the relay address
		"203.0.113.10:50001": false, "203.0.113.10:50998": false, // the relay range, no allocation
		"203.0.113.10:7": false, "203.0.113.10:3478": false, "203.0.113.10:49999": false, "203.0.113.10:51000": false,
		"198.51.100.10:53": false, "198.51.100.10:50500": false, "198.51.100.10:50000": true, // another address of the host
		"127.0.0.1:22": false, "127.9.9.9:8080": false, "0.0.0.0:9": false, // loopback, unspecified
		"[::ffff:203.0.113.10]:7": false, // mapped form
		"203.0.113.99:7":          true,  // another host: any port
	} {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.mayReach(ua); got != want {
			t.Errorf("mayReach(%s) = %v, want %v", addr, got, want)
		}
	}
	if g.mayReach(&net.TCPAddr{IP: net.IPv4(203, 0, 113, 99), Port: 80}) {
		t.Error("mayReach accepted a TCP address")
	}
}

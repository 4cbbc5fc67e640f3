package coordinator

import (
	"net"
	"net/netip"
)

// notRelayable are the ranges the embedded TURN server refuses to relay to
// unless the operator allows them: without this, anyone with a credential
// could use the relay to reach the coordinator's own loopback services or
// the private network it sits in (an "open proxy").
var notRelayable = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT, and the mesh's own overlay
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast, reserved, broadcast
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// peerPolicy decides which peer addresses a TURN client may relay to.
type peerPolicy struct {
	// allow are ranges relayable even though notRelayable lists them (a
	// coordinator serving a private network).
	allow []netip.Prefix
	// own is the relay address: relaying between two allocations of this
	// server must work even when it sits in a private range.
	own netip.Addr
}

func (p peerPolicy) permit(peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	if !ok {
		return false
	}
	a = a.Unmap()
	if a == p.own {
		return true
	}
	for _, pr := range p.allow {
		if pr.Contains(a) {
			return true
		}
	}
	for _, pr := range notRelayable {
		if pr.Contains(a) {
			return false
		}
	}
	return true
}

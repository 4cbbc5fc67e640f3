package relay

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// notRelayable are the ranges a relay refuses to relay to
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
	// only, when set, must say yes too (Config.OnlyPeers).
	only func(netip.Addr) bool
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
	if p.only != nil && !p.only(a) {
		return false
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

// hostGuard keeps the relay from reaching services of its own host: the
// permission callback sees only the peer's IP, and the relay address must
// stay reachable (two allocations of this server relay to each other), so
// the port is checked where packets are relayed. On any address of this
// host only ports that hold an allocation of this relay may be reached,
// and only packets from there are passed on. The whole relay range is not
// enough: the kernel's ephemeral ports (32768-60999 on Linux) overlap it,
// so other sockets of the host (a DNS client, a peer relay node's
// WireGuard socket) sit there too.
type hostGuard struct {
	allocs *relayAllocs
	own    *ownAddrs
}

// mayReach tells whether the relay may exchange packets with addr.
func (g hostGuard) mayReach(addr net.Addr) bool {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false
	}
	return !g.own.has(a.Unmap()) || g.allocs.isLive(u.Port)
}

// ownAddrs are the addresses of this host: the relay and bind addresses,
// loopback and unspecified ones, and those of its interfaces (re-read by
// refresh, as addresses come and go).
type ownAddrs struct {
	fixed []netip.Addr
	iface atomic.Pointer[map[netip.Addr]bool]
}

func newOwnAddrs(fixed ...netip.Addr) *ownAddrs {
	o := &ownAddrs{fixed: fixed}
	o.refresh()
	return o
}

func (o *ownAddrs) has(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	for _, f := range o.fixed {
		if a == f {
			return true
		}
	}
	m := o.iface.Load()
	return m != nil && (*m)[a]
}

// refresh re-reads the interface addresses; on error it keeps the last.
func (o *ownAddrs) refresh() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	m := make(map[netip.Addr]bool, len(addrs))
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			m[p.Addr().Unmap()] = true
		}
	}
	o.iface.Store(&m)
}

// Reachable tells whether a relay may reach a: it is not in a private or
// reserved range, or allow lists it.
func Reachable(a netip.Addr, allow []netip.Prefix) bool {
	return peerPolicy{allow: allow}.permit(net.IP(a.AsSlice()))
}

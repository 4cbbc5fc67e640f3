package relay

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// hairpin delivers between two allocations of this relay itself when its
// relay address is not an address of this host: a relay behind a
// full-cone NAT or a port mapping advertises its router's address, and a
// packet one allocation sends to another at that address would have to
// go out to the router and come back (hairpin NAT), which many routers do
// not do. So such a packet goes straight to the other relay socket on this
// host, and what arrives from a relay socket of this host is presented as
// coming from the relay address, as the permission and channel of the
// receiving allocation name it.
type hairpin struct {
	relayIP netip.Addr
	// local is where this host's relay sockets are reached: their bind
	// address, loopback when they bind every address.
	local  netip.Addr
	allocs *relayAllocs
	// on is whether the relay address is foreign to this host (re-checked
	// with the host's addresses).
	on atomic.Bool
}

func newHairpin(relayIP, bind netip.Addr, allocs *relayAllocs, own *ownAddrs) *hairpin {
	if !bind.IsValid() || bind.IsUnspecified() {
		bind = netip.MustParseAddr("127.0.0.1")
	}
	h := &hairpin{relayIP: relayIP, local: bind, allocs: allocs}
	h.refresh(own)
	return h
}

// refresh turns the shortcut on while the relay address is not one of the
// host's interface addresses.
func (h *hairpin) refresh(own *ownAddrs) {
	m := own.iface.Load()
	h.on.Store(m == nil || !(*m)[h.relayIP])
}

// out is where to send a packet addressed to to: another allocation of
// this relay at the relay address goes to its socket on this host.
func (h *hairpin) out(to net.Addr) net.Addr {
	if h == nil || !h.on.Load() {
		return to
	}
	ap, ok := addrPort(to)
	if !ok || ap.Addr() != h.relayIP || !h.allocs.isLive(int(ap.Port())) {
		return to
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.local, ap.Port()))
}

// in is who a packet that came from from is from: a relay socket of this
// host speaks for the relay address.
func (h *hairpin) in(from net.Addr) net.Addr {
	if h == nil || !h.on.Load() {
		return from
	}
	ap, ok := addrPort(from)
	if !ok || ap.Addr() != h.local || !h.allocs.isLive(int(ap.Port())) {
		return from
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.relayIP, ap.Port()))
}

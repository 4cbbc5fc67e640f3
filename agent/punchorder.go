package agent

import "github.com/meshvpn/meshvpn/netcheck"

// Who sends the first connectivity checks of a direct session.
//
// On a router without an input firewall (Docker hosts, cloud NAT
// instances, many DIY and ISP routers) a peer's packet that arrives before
// the host behind it has sent to that peer is taken as a flow to the
// router itself, and that conntrack entry stays for as long as the peer
// keeps sending (LAB-NOTES.md). Where it hurts depends on the filtering:
//
//   - behind a restricted cone (address-dependent filtering) the entry
//     captures every later packet from that peer's address and port: the
//     peer's checks never reach the host. Once the host has sent to the
//     peer's address, any port of it gets in;
//   - behind a port-restricted cone or a symmetric NAT (address-and-port-
//     dependent filtering) the entry only moves the host's own mapping
//     toward that peer to another port, and the host's packets from that
//     port still reach a peer that lets in any port of the address.
//
// So the side whose filter admits the whole address once opened (full or
// restricted cone) sends first, and a side that filters by address and
// port holds back until the other's first checks have left.
//
// Between two sides that both filter by address and port, whichever
// check arrives first moves the other's mapping. A side that knows a TTL
// at which its packets pass its own NATs and die at the next router
// (probeOpenTTL) opens first with such packets, which never reach the
// peer's router; the peer then checks at full TTL and gets in, and our
// own checks follow once the peer says its first ones have left. Measured in
// the lab (e2e TestMeshAllNATPairs): restricted cone <-> port-restricted,
// double NAT and symmetric went direct in about half the runs with both
// sides sending at once, every run with this order.
type punchOrder int

const (
	// orderTogether: both sides check at once (no known reason to wait).
	orderTogether punchOrder = iota
	// orderFirst: we check at once; the peer holds back.
	orderFirst
	// orderWait: we hold back our checks until the peer says its first
	// ones have left (SignalOpened), or punchHoldMax passed.
	orderWait
	// orderOpenLow: we open our NAT with low-TTL packets to the peer's
	// public candidates, then hold back our checks as with orderWait; the
	// peer waits for our opening.
	orderOpenLow
	// orderSync: both sides hold their checks back until an instant they
	// agreed on through signalling, send opening packets to each other's
	// public address at that instant, and then check (syncopen.go).
	orderSync
)

func (o punchOrder) String() string {
	switch o {
	case orderFirst:
		return "first"
	case orderWait:
		return "wait"
	case orderOpenLow:
		return "open with low TTL"
	case orderSync:
		return "synchronized open"
	}
	return "together"
}

// natView is what one side has measured of its own NAT.
type natView struct {
	// Filtering is netcheck's verdict; "" or netcheck.Unknown when not
	// measured.
	Filtering string
	// PortMapped: the gateway forwards a port to the node, which then
	// takes anything sent there.
	PortMapped bool
	// OpenTTL is the TTL of a low-TTL opening packet, 0 without one.
	OpenTTL int
	// Symmetric: the NAT maps each destination to a fresh port, so no
	// peer can aim at our mapping (birthday punching is for that).
	Symmetric bool
	// SyncOpen: the side takes part in synchronized opens (Signal.SyncOpen).
	SyncOpen bool
}

func (v natView) known() bool {
	return v.PortMapped || (v.Filtering != "" && v.Filtering != netcheck.Unknown)
}

// opensWholeAddress tells whether, once the host has sent to an address,
// anything from that address gets in (or everything does).
func (v natView) opensWholeAddress() bool {
	return v.PortMapped || v.Filtering == netcheck.EndpointIndependent || v.Filtering == netcheck.AddressDependent
}

// decideOrder says who sends first between us and the peer. Both sides
// compute it from the same two views (and which of them controls the ICE
// session, for a tie), so they agree without talking.
func decideOrder(self, peer natView, controlling bool) punchOrder {
	if !self.known() || !peer.known() {
		return orderTogether
	}
	switch s, p := self.opensWholeAddress(), peer.opensWholeAddress(); {
	case s && !p:
		return orderFirst
	case !s && p:
		return orderWait
	case s && p:
		return orderTogether
	}
	switch sl, pl := self.OpenTTL > 0, peer.OpenTTL > 0; {
	case sl && (!pl || controlling):
		return orderOpenLow
	case pl:
		return orderWait
	}
	if syncPair(self, peer) {
		return orderSync
	}
	return orderTogether
}

// syncPair tells whether two sides that both filter by address and port,
// with no low-TTL opening on either, meet by a synchronized open: neither
// may send first, since its first packet would reach the other's router
// before that router's host has sent and leave a stale entry there (on a
// router without an input firewall, which neither side can tell from
// inside). Sent at one instant, each opening packet passes its own NAT
// before the other's arrives whenever the skew between the two sends is
// below the latency between the NATs (e2e TestSimultaneousOpenLatency).
// A symmetric NAT has no mapping to aim at, and both sides must take part.
func syncPair(self, peer natView) bool {
	return self.SyncOpen && peer.SyncOpen && !self.Symmetric && !peer.Symmetric &&
		!self.PortMapped && !peer.PortMapped &&
		self.Filtering == netcheck.AddrPortDependent && peer.Filtering == netcheck.AddrPortDependent
}

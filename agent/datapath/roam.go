package datapath

import (
	"net/netip"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// WireGuard roams to wherever an authenticated packet last came from. When
// a peer's path moves from the relay to a direct one, the peer's packets
// still in flight through the relay arrive after the switch (tens of
// milliseconds later with real latency) and would roam our WireGuard back
// to the relay; ours then go through the relay, the peer roams back too,
// and both stay there under a direct status with nothing on the direct
// flow (seen in the lab with WAN delay, and under birthday paths: e2e
// TestMeshAllNATPairs). So for RoamGrace after a path moves off the
// relay, relayed packets reach WireGuard as if from the new path's
// endpoint: they still count, and roam nowhere. Later ones roam as
// before: a peer that still sends through the relay then really uses it.

// RoamGrace: how long after a move off the relay relayed packets are
// taken as the peer's last ones from before its own move. Both sides move
// within a round trip of each other.
const RoamGrace = 5 * time.Second

// roamTarget is the endpoint relayed packets are attributed to, until.
type roamTarget struct {
	addr  netip.AddrPort
	ep    conn.Endpoint
	until time.Time
}

// RoamHold is a peer's roamTarget, read per relayed packet without the
// peer's lock. The zero value holds nothing.
type RoamHold struct{ p atomic.Pointer[roamTarget] }

// Set records the path now active: nothing for the relay, else ep's
// endpoint on the bind (a birthday path's own socket, or the shared
// one). The grace starts when the endpoint changes.
func (r *RoamHold) Set(b *Bind, relay bool, ep netip.AddrPort, now time.Time) {
	if relay {
		r.p.Store(nil)
		return
	}
	if t := r.p.Load(); t != nil && t.addr == ep {
		return
	}
	var e conn.Endpoint = &conn.StdNetEndpoint{AddrPort: ep}
	if re := b.relays.lookup(ep); re != nil {
		e = re // a birthday path's socket
	}
	r.p.Store(&roamTarget{addr: ep, ep: e, until: now.Add(RoamGrace)})
}

// Endpoint is what a relayed packet from ep is attributed to now.
func (r *RoamHold) Endpoint(ep *Endpoint, now time.Time) conn.Endpoint {
	if t := r.p.Load(); t != nil && now.Before(t.until) {
		return t.ep
	}
	return ep
}

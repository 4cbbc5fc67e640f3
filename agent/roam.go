package agent

import (
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// WireGuard roams to wherever an authenticated packet last came from. When
// a peer's path moves from the relay to a direct one, the peer's packets
// still in flight through the relay arrive after the switch (tens of
// milliseconds later with real latency) and would roam our WireGuard back
// to the relay; ours then go through the relay, the peer roams back too,
// and both stay there under a direct status with nothing on the direct
// flow (seen in the lab with WAN delay: e2e TestMeshAllNATPairs). So while
// the direct lane's path is active, relayed packets reach WireGuard as if
// from that path's endpoint: they still count, and roam nowhere. A peer
// that really fell back to the relay is followed once our direct lane
// sees the path die (ICE consent, seconds).

// roamTarget is the endpoint relayed packets are attributed to.
type roamTarget struct{ ep conn.Endpoint }

// roamHold is a peer's roamTarget, read per relayed packet without the
// peer's lock.
type roamHold struct{ p atomic.Pointer[roamTarget] }

// set records the path now active: with the direct lane's (direct), ep
// on the shared socket; otherwise none, and relayed packets keep their
// own endpoint. A birthday path keeps WireGuard's roaming: only
// WireGuard's own traffic tells whether it still works, and a peer that
// dropped it must be followed back to the relay.
func (r *roamHold) set(direct bool, ep netip.AddrPort) {
	if !direct {
		r.p.Store(nil)
		return
	}
	r.p.Store(&roamTarget{ep: &conn.StdNetEndpoint{AddrPort: ep}})
}

// endpoint is what a relayed packet from ep is attributed to.
func (r *roamHold) endpoint(ep *relayEndpoint) conn.Endpoint {
	if t := r.p.Load(); t != nil {
		return t.ep
	}
	return ep
}

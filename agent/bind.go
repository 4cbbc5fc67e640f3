package agent

import (
	"io"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshvpn/meshvpn/agent/datapath"
)

// Bind is WireGuard's conn.Bind, the data path (package datapath), with
// the agent's own packets on the shared socket taken off it: answers to
// mapping queries (mapquery.go), birthday replies (birthdaypkt.go) and
// synchronized-open arrivals (syncpkt.go).
type Bind struct {
	*datapath.Bind
	// relays is the bind's routing by endpoint (relay allocations and
	// birthday sockets), under the names the agent's files use.
	relays  routes
	queries mapQueries
	bday    bdayReplies
	syncs   syncArrivals
	// mapped is the last answer of queryMapping: where the shared
	// socket's new flows leave from, as last seen (mappedAt when).
	mappedMu sync.Mutex
	mapped   netip.AddrPort
	mappedAt time.Time
	// consents are the direct lanes' consent checks in flight
	// (consentwire.go).
	consents consentChecks
}

// NewBind returns a Bind; its STUN side is Bind.STUNConn.
func NewBind() *Bind {
	b := &Bind{}
	b.Bind = datapath.NewBind(b.divert)
	b.relays = routes{b.Bind}
	return b
}

// divert takes the agent's packets off WireGuard's receive path; the STUN
// it leaves goes to ICE.
func (b *Bind) divert(p []byte, from netip.AddrPort) bool {
	switch classify(p) {
	case kindSTUN:
		return b.queries.answer(p) || b.consents.answer(p, from)
	case kindBirthday:
		b.bday.deliver(p, from)
	case kindSync:
		b.syncs.deliver(p, from)
	}
	return true
}

// sendTo writes one datagram from the shared socket.
func (b *Bind) sendTo(p []byte, to netip.AddrPort) error { return b.SendTo(p, to) }

// relayEndpoint is a WireGuard endpoint routed through a writer of ours.
type relayEndpoint = datapath.Endpoint

// roamHold: what relayed packets roam WireGuard to (datapath/roam.go).
type roamHold = datapath.RoamHold

// routes is the bind's routing by endpoint.
type routes struct{ b *datapath.Bind }

func (r routes) add(addr netip.AddrPort, w io.Writer) *relayEndpoint { return r.b.Route(addr, w) }
func (r routes) put(ep *relayEndpoint)                               { r.b.Reroute(ep) }
func (r routes) remove(ep *relayEndpoint)                            { r.b.Unroute(ep) }
func (r routes) deliver(p []byte, ep conn.Endpoint)                  { r.b.Deliver(p, ep) }

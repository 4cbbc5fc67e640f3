package agent

import (
	"net/netip"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/agent/datapath"
)

// Bind is WireGuard's conn.Bind, the data path (package datapath), with
// the agent's own packets on the shared socket taken off it: answers to
// mapping queries (mapquery.go), birthday replies (birthdaypkt.go) and
// synchronized-open arrivals (syncpkt.go).
type Bind struct {
	*datapath.Bind
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

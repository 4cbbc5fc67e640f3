package coordinator

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

// Peer relays: members that run a relay (meshvpn up --relay-server) offer
// it with a POST to control.PathRelayOffer, renewed every peerRelayEvery.
// The coordinator lists each live offer in the other nodes' relay lists,
// with credentials minted under that relay's own secret
// (relay.PeerSecret), and keeps the usage each relay reports. Offers live
// in this coordinator's memory: a relay node re-offers within
// peerRelayEvery after a restart.
const (
	peerRelayEvery = 30 * time.Second
	// peerRelayTTL is how long an offer lives without a renewal.
	peerRelayTTL = 3 * peerRelayEvery
)

type peerOffer struct {
	node    uint64
	addr    netip.AddrPort
	expires time.Time
}

type peerRelays struct {
	mu     sync.Mutex
	offers map[uint64]peerOffer
	// gen changes whenever the set of listed relays does: each stream
	// sends its node a fresh relay list when it sees a new one.
	gen uint64
	// usage is what each relay reported, by relay node, and when it last
	// reported (usage from a peer relay lags by up to peerRelayEvery).
	usage    map[uint64]*relay.Ledger
	reported map[uint64]time.Time
	started  time.Time
}

func newPeerRelays(now time.Time) *peerRelays {
	return &peerRelays{offers: map[uint64]peerOffer{}, usage: map[uint64]*relay.Ledger{}, reported: map[uint64]time.Time{}, started: now}
}

// offer records node's relay at addr until now+peerRelayTTL.
func (p *peerRelays) offer(node uint64, addr netip.AddrPort, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	if old, ok := p.offers[node]; !ok || old.addr != addr {
		p.gen++
	}
	p.offers[node] = peerOffer{node: node, addr: addr, expires: now.Add(peerRelayTTL)}
}

// touch makes every stream send a fresh relay list (who may use which
// relay changed: a new access policy).
func (p *peerRelays) touch() {
	p.mu.Lock()
	p.gen++
	p.mu.Unlock()
}

// withdraw forgets node's offer (it left the mesh, or offers no longer).
func (p *peerRelays) withdraw(node uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.offers[node]; ok {
		delete(p.offers, node)
		p.gen++
	}
}

func (p *peerRelays) expireLocked(now time.Time) {
	for id, o := range p.offers {
		if now.After(o.expires) {
			delete(p.offers, id)
			p.gen++
		}
	}
}

// list is the live offers, by node, and the set's generation.
func (p *peerRelays) list(now time.Time) ([]peerOffer, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	out := make([]peerOffer, 0, len(p.offers))
	for _, o := range p.offers {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b peerOffer) int { return cmp.Compare(a.node, b.node) })
	return out, p.gen
}

// report adds what relay node reported, counting only rows of members.
func (p *peerRelays) report(node uint64, rows []control.RelayUsage, member func(uint64) bool, now time.Time) {
	p.mu.Lock()
	p.reported[node] = now
	l := p.usage[node]
	if l == nil {
		l = relay.NewLedger(p.started)
		p.usage[node] = l
	}
	p.mu.Unlock()
	for _, r := range rows {
		if r.Node == 0 || !member(r.Node) {
			continue
		}
		l.Add(r.Node, relay.Counts{BytesIn: r.BytesIn, PacketsIn: r.PacketsIn, BytesOut: r.BytesOut, PacketsOut: r.PacketsOut}, now)
	}
}

// ledgers are the usage ledgers of the relays that reported, by node,
// and when each last reported.
func (p *peerRelays) ledgers() (map[uint64]*relay.Ledger, map[uint64]time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]*relay.Ledger, len(p.usage))
	for id, l := range p.usage {
		out[id] = l
	}
	when := make(map[uint64]time.Time, len(p.reported))
	for id, t := range p.reported {
		when[id] = t
	}
	return out, when
}

// forget drops a node that left the mesh: its offer, and its usage ledger
// as a relay.
func (p *peerRelays) forget(node uint64) {
	p.withdraw(node)
	p.mu.Lock()
	delete(p.usage, node)
	delete(p.reported, node)
	p.mu.Unlock()
}

// remoteOffer records a peer relay offered (or withdrawn, addr not
// valid) through another replica, for this replica's agents.
func (s *Server) remoteOffer(node uint64, addr netip.AddrPort) {
	if !s.hub.Active(node) {
		return
	}
	if !addr.IsValid() {
		s.peers.withdraw(node)
		return
	}
	s.peers.offer(node, addr, time.Now())
}

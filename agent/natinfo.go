package agent

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// natInfoPerTick bounds the NAT-info signals sent per tick (a second).
// Told to every peer at once, a mesh of thousands would fill the control
// stream's send queue (256 messages, shared with ICE signals) and drop
// signals; paced, a thousand peers learn it within half a minute, and a
// peer that wakes before its turn gets it in our offer anyway.
const natInfoPerTick = 32

// natInfoQueue holds the peers still to be told our NAT views.
type natInfoQueue struct {
	mu      sync.Mutex
	pending map[uint64]struct{}
	// ask: peers whose views we forgot (they came online again), asked
	// for them with ours (Signal.Ask, natepoch.go).
	ask map[uint64]struct{}
}

// announceNAT tells every peer what the NAT probe found. Peers explain
// paths with it and decide who punches first (punchorder.go); offers
// carry it too, but the first ones usually leave before the probe is done.
func (a *Agent) announceNAT() {
	ps := a.peerList()
	for _, p := range ps {
		p.natViewsChanged()
	}
	a.queueNATInfo(ps...)
	a.natInfoTick(time.Now())
}

// queueNATInfo marks peers to be told our NAT views by natInfoTick.
func (a *Agent) queueNATInfo(ps ...*peer) {
	q := &a.natInfo
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending == nil {
		q.pending = map[uint64]struct{}{}
	}
	for _, p := range ps {
		q.pending[p.id] = struct{}{}
	}
}

// askNATInfo marks a peer whose views we forgot: our next info to it
// (now if our probe is done, else with its result) asks for its own.
func (a *Agent) askNATInfo(p *peer) {
	probed := a.natProbed()
	q := &a.natInfo
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ask == nil {
		q.ask = map[uint64]struct{}{}
	}
	q.ask[p.id] = struct{}{}
	if probed {
		if q.pending == nil {
			q.pending = map[uint64]struct{}{}
		}
		q.pending[p.id] = struct{}{}
	}
}

// forgetNATInfo drops a peer that left the netmap from both sets: its
// ask mark would otherwise stay for good, as no info goes to it again.
func (a *Agent) forgetNATInfo(id uint64) {
	q := &a.natInfo
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, id)
	delete(q.ask, id)
}

// natInfoTick sends the NAT views to up to natInfoPerTick queued peers,
// awake ones first (their sessions use them now), with what the latest
// probe found.
func (a *Agent) natInfoTick(time.Time) {
	q := &a.natInfo
	q.mu.Lock()
	if len(q.pending) == 0 {
		q.mu.Unlock()
		return
	}
	var awake, asleep []*peer
	for _, p := range a.peerList() {
		if _, ok := q.pending[p.id]; !ok {
			continue
		}
		if p.sleeping.Load() {
			asleep = append(asleep, p)
		} else {
			awake = append(awake, p)
		}
	}
	// Stable order, so no peer waits behind newer ones forever.
	byID := func(x, y *peer) int { return cmp.Compare(x.id, y.id) }
	slices.SortFunc(awake, byID)
	slices.SortFunc(asleep, byID)
	send := append(awake, asleep...)
	send = send[:min(len(send), natInfoPerTick)]
	// Peers gone from the netmap leave the set with the batch.
	clear(q.pending)
	for _, p := range append(awake, asleep...)[len(send):] {
		q.pending[p.id] = struct{}{}
	}
	q.mu.Unlock()
	self := a.natSignalNow()
	q.mu.Lock()
	asks := make([]bool, len(send))
	for i, p := range send {
		_, asks[i] = q.ask[p.id]
		delete(q.ask, p.id)
	}
	q.mu.Unlock()
	for i, p := range send {
		s := control.Signal{To: p.id, Kind: control.SignalInfo, Ask: asks[i]}
		self.fill(&s)
		a.sendSignal(s)
	}
}

package agent

import (
	"sync"
	"time"
)

// A lazy peer's queued packets go to WireGuard only once WireGuard has a
// session with the peer: handed over before, they would make wireguard-go
// start a handshake of its own, which on the controlled side races the
// controlling side's (see applyPath), and a recreated WireGuard peer
// (ensureHandshake) would lose them. readyWatch polls WireGuard's
// handshake times for the peers waiting, one read for all of them.
type readyWatch struct {
	a       *Agent
	mu      sync.Mutex
	waiting map[*peer]time.Time // since when
	running bool
}

const (
	readyPoll = 10 * time.Millisecond
	// readyGiveUp: a peer with no handshake by then gets its packets
	// anyway; WireGuard then queues them behind its own handshake.
	readyGiveUp = 5 * time.Second
)

// pathApplied is called after a peer's path went into WireGuard.
func (p *peer) pathApplied() {
	if p.ready.Load() {
		return
	}
	if !p.a.lazyActive.Load() {
		p.markReady()
		return
	}
	p.a.ready.add(p)
}

// markReady lets the peer's packets pass and hands over its queue. Under
// the peer's lock, so that it cannot cross sleep (which holds packets
// again).
func (p *peer) markReady() {
	p.mu.Lock()
	if p.asleep || p.closed {
		p.mu.Unlock()
		return
	}
	p.ready.Store(true)
	pkts := p.queue.open()
	p.mu.Unlock()
	if len(pkts) > 0 && p.a.lazy != nil {
		p.a.lazy.inject(pkts)
	}
}

func (w *readyWatch) add(p *peer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiting == nil {
		w.waiting = map[*peer]time.Time{}
	}
	if _, ok := w.waiting[p]; !ok {
		w.waiting[p] = time.Now()
	}
	if !w.running {
		w.running = true
		go w.run()
	}
}

func (w *readyWatch) run() {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		if len(w.waiting) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		var ps []*peer
		for p := range w.waiting {
			ps = append(ps, p)
		}
		w.mu.Unlock()
		stats, err := w.a.wg.stats()
		now := time.Now()
		for _, p := range ps {
			st, ok := stats[p.key.Hex()]
			w.mu.Lock()
			since := w.waiting[p]
			done := (err == nil && ok && !st.LastHandshake.IsZero()) || now.Sub(since) >= readyGiveUp || p.sleeping.Load()
			if done {
				delete(w.waiting, p)
			}
			w.mu.Unlock()
			if done && !p.sleeping.Load() {
				p.markReady()
			}
		}
	}
}

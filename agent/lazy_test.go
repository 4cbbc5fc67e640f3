package agent

import (
	"bytes"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

func lazyTestAgent(n int) (*Agent, []*peer) {
	a := &Agent{log: slog.New(slog.DiscardHandler), logLimit: logsafe.NewLimiter(10, time.Minute), peers: map[uint64]*peer{}}
	a.lazyActive.Store(true)
	var ps []*peer
	for i := range n {
		// Offline: kick does nothing, so no ICE agent is made.
		node := control.Node{ID: uint64(i + 2), Name: "p", IP: netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i + 2)}).String()}
		p := newPeer(a, node, Key{byte(i + 1)}, true)
		a.peers[node.ID] = p
		ps = append(ps, p)
	}
	return a, ps
}

// TestSignalWakeWithinBudget: members signalling a lazy agent together
// wake only as many peers as the session budget allows; signals that ask
// for no session wake none.
func TestSignalWakeWithinBudget(t *testing.T) {
	_, ps := lazyTestAgent(300)
	for _, p := range ps {
		if p.wakeBySignal(control.SignalCandidate) {
			t.Fatal("a candidate woke a sleeping peer")
		}
	}
	woken := 0
	for _, p := range ps {
		if p.wakeBySignal(control.SignalOffer) {
			woken++
		}
	}
	if max := int(sessionPace.Burst) + 1; woken > max || woken == 0 {
		t.Fatalf("300 peers offering at once woke %d, want 1..%d (the session budget's burst)", woken, max)
	}
	t.Logf("300 peers offering at once: %d woken, %d left asleep", woken, 300-woken)
}

func ipv4Packet(src, dst string, payload byte) []byte {
	p := make([]byte, 28)
	p[0], p[9] = 0x45, 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	p[27] = payload
	return p
}

// TestLazyTUNQueues: a packet to a sleeping peer is taken out of
// WireGuard's batch and queued; once the peer is ready the next Read hands
// it over unchanged, and later packets pass straight through.
func TestLazyTUNQueues(t *testing.T) {
	a, ps := lazyTestAgent(1)
	p := ps[0]
	a.peersChanged()
	a.lazyActive.Store(true)
	f := &fakeTUN{}
	tun := &lazyTUN{Device: f, a: a}
	a.lazy = tun
	first := ipv4Packet("100.64.0.1", p.node.IP, 1)
	f.reads = [][]byte{first}
	bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
	if n, _ := tun.Read(bufs, sizes, 16); n != 1 || sizes[0] != 0 {
		t.Fatalf("packet to a sleeping peer went to WireGuard: n=%d size=%d", n, sizes[0])
	}
	if q, _ := p.queue.stats(); q != 1 || a.queued.Load() != 1 {
		t.Fatalf("queued %d (agent %d), want 1", q, a.queued.Load())
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.sleeping.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // woken off the data path
	}
	if p.sleeping.Load() {
		t.Fatal("packet did not wake the peer")
	}
	p.markReady()
	if n, _ := tun.Read(bufs, sizes, 16); n != 1 || !bytes.Equal(bufs[0][16:16+sizes[0]], first) {
		t.Fatalf("queued packet not handed over: n=%d", n)
	}
	second := ipv4Packet("100.64.0.1", p.node.IP, 2)
	f.reads = [][]byte{second}
	if n, _ := tun.Read(bufs, sizes, 16); n != 1 || sizes[0] != len(second) {
		t.Fatalf("packet to a ready peer held back: n=%d size=%d", n, sizes[0])
	}
	if a.queued.Load() != 0 {
		t.Errorf("agent still counts %d queued", a.queued.Load())
	}
}

// TestLazyQueueBounds: the queue holds lazyQueuePeer packets per peer and
// lazyQueueTotal in all; the rest is dropped and counted.
func TestLazyQueueBounds(t *testing.T) {
	a, ps := lazyTestAgent(lazyQueueTotal/lazyQueuePeer + 4)
	pkt := ipv4Packet("100.64.0.1", "100.64.0.2", 0)
	for _, p := range ps {
		for range lazyQueuePeer + 5 {
			p.queue.push(pkt, &a.queued)
		}
	}
	if n, d := ps[0].queue.stats(); n != lazyQueuePeer || d != 5 {
		t.Errorf("one peer: %d queued, %d dropped; want %d and 5", n, d, lazyQueuePeer)
	}
	if a.queued.Load() != lazyQueueTotal {
		t.Errorf("all peers: %d queued, want %d", a.queued.Load(), lazyQueueTotal)
	}
	ps[0].queue.expire(time.Now().Add(lazyQueueTTL + time.Second))
	if n, _ := ps[0].queue.stats(); n != 0 || a.queued.Load() != lazyQueueTotal-lazyQueuePeer {
		t.Errorf("after the TTL: %d queued (agent %d)", n, a.queued.Load())
	}
}

// TestLazyAutoTurn: auto turns lazy above LazyAutoPeers and eager again
// only well below it; paths set up eagerly before the turn get
// lazyTurnGrace to carry traffic, not the whole idle time.
func TestLazyAutoTurn(t *testing.T) {
	for _, c := range []struct {
		n        int
		now, out bool
	}{
		{LazyAutoPeers, false, false}, {LazyAutoPeers + 1, false, true},
		{lazyAutoEager + 1, true, true}, {lazyAutoEager, true, false},
	} {
		if got := lazyFor(LazyAuto, c.n, c.now); got != c.out {
			t.Errorf("auto, %d peers, lazy now %v: got %v, want %v", c.n, c.now, got, c.out)
		}
	}
	a, ps := lazyTestAgent(3)
	a.cfg.LazyPeers = LazyAuto
	a.lazyActive.Store(false)
	for _, p := range ps {
		p.asleep = false
	}
	a.updateLazy(LazyAutoPeers + 1)
	if !a.lazyActive.Load() {
		t.Fatal("did not turn lazy")
	}
	left := a.lazyIdle() - time.Since(ps[0].lastUsed)
	if left > lazyTurnGrace || left < lazyTurnGrace-time.Second {
		t.Errorf("an eager path has %v left before the idle teardown, want %v", left, lazyTurnGrace)
	}
}

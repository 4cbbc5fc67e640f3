package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestNATInfoPaced: the first NAT probe's result reaches every peer of a
// mesh of a thousand without ever filling the control stream's send queue
// (256 messages, shared with ICE signals), which would drop signals.
func TestNATInfoPaced(t *testing.T) {
	const peers = 1000
	a, ps := lazyTestAgent(peers)
	// Two awake peers: they need the views now, for sessions in flight.
	for _, p := range ps[:2] {
		p.asleep = false
		p.sleeping.Store(false)
	}
	a.ctl = &controlClient{log: slog.New(slog.DiscardHandler), out: make(chan control.Message, 256), connected: true}
	a.nat.label, a.nat.filtering, a.nat.probed = natSymmetric, "endpoint-independent", true
	got := map[uint64]int{}
	first := -1
	drain := func() {
		for {
			select {
			case m := <-a.ctl.out:
				if m.Signal == nil || m.Signal.Kind != control.SignalInfo || m.Signal.NAT != natSymmetric {
					t.Fatalf("unexpected message %+v", m)
				}
				if first < 0 {
					first = len(got)
				}
				got[m.Signal.To]++
			default:
				return
			}
		}
	}
	a.announceNAT()
	if n := len(a.ctl.out); n > cap(a.ctl.out)/4 {
		t.Fatalf("announcing to %d peers put %d messages in the send queue at once (cap %d), want at most %d: the rest are dropped or crowd out ICE signals",
			peers, n, cap(a.ctl.out), cap(a.ctl.out)/4)
	}
	drain()
	for _, p := range ps[:2] {
		if got[p.id] != 1 {
			t.Fatalf("awake peer %d not told at once (got %d)", p.id, got[p.id])
		}
	}
	now := time.Now()
	for i := 0; i < 2*peers && len(got) < peers; i++ {
		now = now.Add(time.Second)
		a.natInfoTick(now)
		if n := len(a.ctl.out); n > cap(a.ctl.out)/4 {
			t.Fatalf("a tick queued %d messages, want at most %d", n, cap(a.ctl.out)/4)
		}
		drain()
	}
	if len(got) != peers {
		t.Fatalf("%d of %d peers told", len(got), peers)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("peer %d told %d times", id, n)
		}
	}
}

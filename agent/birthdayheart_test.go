package agent

import (
	"log/slog"
	"testing"
	"time"
)

// TestPunchedPathIdleWireGuard: on an idle tunnel wireguard-go lets only
// one side send keepalives (receiving one restarts the other's timer), so
// WireGuard's counters may show nothing from the peer for minutes on a
// working birthday path. The path stays up while its own heartbeat is
// answered, and is dropped once that has been silent for punchedSilence.
func TestPunchedPathIdleWireGuard(t *testing.T) {
	p := &peer{a: &Agent{bind: NewBind()}, log: slog.New(slog.DiscardHandler)}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.punched.name = lanePunched
	p.punched.selected = true
	p.punched.started = now.Add(-2 * time.Minute)
	p.live.lastRx = now.Add(-2 * time.Minute) // WireGuard: nothing since the path began
	p.bd.heard.Store(now.Add(-5 * time.Second).UnixNano())
	p.birthdayTickLocked(now)
	if !p.punched.up() {
		t.Fatal("birthday path dropped although its heartbeat was answered 5 s ago (WireGuard idle)")
	}
	p.bd.heard.Store(now.Add(-punchedSilence - time.Second).UnixNano())
	p.live.lastRx = now // WireGuard traffic may come through the relay: no sign for the path
	p.birthdayTickLocked(now)
	if p.punched.up() {
		t.Fatalf("birthday path kept although nothing came on it for %v", punchedSilence+time.Second)
	}
}

package agent

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestBirthdayAskNotTowardMissedMapping: after an attempt whose probes
// all missed, the next ask must not name the mapping the last query saw
// before that miss. On a router without an input firewall a peer's early
// check moves the shared socket's mapping for every new flow (Linux gives
// a new flow the mapping of its source's newest flow), so the probes leave
// from another port than the one the peer's sockets opened toward; asking
// toward the old port again wastes every attempt until the moved entries
// expire (issue 10: four attempts "no hit in 4,000 probes" over 30 s, then
// direct 40 s later). With no fresh STUN address to ask, the attempt waits
// for one; a query after the miss is used at once.
func TestBirthdayAskNotTowardMissedMapping(t *testing.T) {
	now := time.Now()
	// Every fresh STUN address was asked a moment ago (ICE sessions
	// starting at once use them up too).
	a, b, p := bdayAskPeer(now.Add(-2 * time.Second))
	old := netip.MustParseAddrPort("203.0.113.106:37020")
	b.mapped, b.mappedAt = old, now.Add(-2*time.Second)

	// Attempt 1 asked toward old and missed 4,000 probes.
	p.bd = birthdayState{running: true, role: bdayProbe, tok: bdayToken{1}, phase: "probing", started: now.Add(-2 * time.Second),
		askedFrom: old, askedAt: now.Add(-2 * time.Second), probes: new(atomic.Int64), attempts: 1}
	p.bd.probes.Store(birthdayMissProbes)
	p.mu.Lock()
	p.birthdayRetryNowLocked("no hit")
	// Attempt 2 starts as birthdayTickLocked starts it.
	tok := bdayToken{2}
	p.bd.running, p.bd.role, p.bd.tok, p.bd.phase, p.bd.started = true, bdayProbe, tok, "asking", time.Now()
	p.bd.probes = new(atomic.Int64)
	p.bd.attempts++
	p.mu.Unlock()

	p.birthdayAsk(tok)
	select {
	case m := <-a.ctl.out:
		if m.Signal != nil && m.Signal.Kind == control.SignalBirthdayAsk && m.Signal.Candidate == old.String() {
			t.Fatalf("attempt 2 asked the peer to open toward %s, the mapping seen before attempt 1 missed %d probes", old, birthdayMissProbes)
		}
		t.Fatalf("unexpected message %+v", m)
	default:
	}
	p.mu.Lock()
	running, next := p.bd.running, p.bd.next
	p.mu.Unlock()
	if running {
		t.Fatal("the attempt still runs without an ask")
	}
	if want := now.Add(-2 * time.Second).Add(staleExpiry); next.Before(want.Add(-time.Second)) {
		t.Errorf("next attempt at %s, want when a STUN address is fresh again (%s)", next.Format(time.StampMilli), want.Format(time.StampMilli))
	}

	// A query after the miss (another lane's) shows where new flows leave
	// from now: the next ask names it at once.
	moved := netip.MustParseAddrPort("203.0.113.106:14414")
	b.mappedMu.Lock()
	b.mapped, b.mappedAt = moved, time.Now()
	b.mappedMu.Unlock()
	tok = bdayToken{3}
	p.mu.Lock()
	p.bd.running, p.bd.tok, p.bd.phase, p.bd.started = true, tok, "asking", time.Now()
	p.mu.Unlock()
	p.birthdayAsk(tok)
	select {
	case m := <-a.ctl.out:
		if m.Signal == nil || m.Signal.Kind != control.SignalBirthdayAsk || m.Signal.Candidate != moved.String() {
			t.Fatalf("ask %+v, want one toward %s", m.Signal, moved)
		}
	default:
		t.Fatalf("no ask after a fresh query showed %s", moved)
	}
}

// TestBirthdayAskAfterMoveUsesTheMove: an attempt given up because a query
// since the ask saw our mapping move is not a miss toward a stale mapping.
// The next ask names the moved mapping at once; before, it waited for a
// fresh STUN address (30 s on input-accept routers in the lab).
func TestBirthdayAskAfterMoveUsesTheMove(t *testing.T) {
	now := time.Now()
	a, b, p := bdayAskPeer(now.Add(-time.Second))
	old := netip.MustParseAddrPort("203.0.113.105:51745")
	p.bd = birthdayState{running: true, role: bdayProbe, tok: bdayToken{1}, phase: "probing", started: now.Add(-time.Second),
		askedFrom: old, askedAt: now.Add(-time.Second), probes: new(atomic.Int64), attempts: 1}
	moved := netip.MustParseAddrPort("203.0.113.105:56867")
	b.mappedMu.Lock()
	b.mapped, b.mappedAt = moved, now.Add(-500*time.Millisecond)
	b.mappedMu.Unlock()

	p.mu.Lock()
	if !p.mappingMovedLocked() {
		p.mu.Unlock()
		t.Fatal("the mapping seen after the ask is not taken as moved")
	}
	p.birthdayRetryNowLocked("our mapping moved since the ask")
	p.movedNotMissedLocked()
	tok := bdayToken{2}
	p.bd.running, p.bd.role, p.bd.tok, p.bd.phase, p.bd.started = true, bdayProbe, tok, "asking", time.Now()
	p.bd.probes = new(atomic.Int64)
	p.bd.attempts++
	p.mu.Unlock()

	p.birthdayAsk(tok)
	select {
	case m := <-a.ctl.out:
		if m.Signal == nil || m.Signal.Kind != control.SignalBirthdayAsk || m.Signal.Candidate != moved.String() {
			t.Fatalf("ask %+v, want one toward the moved mapping %s", m.Signal, moved)
		}
	default:
		p.mu.Lock()
		next := p.bd.next
		p.mu.Unlock()
		t.Fatalf("no ask after the move was seen; the next attempt waits until %s", next.Format(time.StampMilli))
	}
}

// bdayAskPeer is a probe-side peer whose agent knows one RFC 5780 STUN
// server and used its three fresh addresses at usedAt; signals go to
// a.ctl.out.
func bdayAskPeer(usedAt time.Time) (*Agent, *Bind, *peer) {
	b := NewBind()
	a := &Agent{bind: b, ctl: &controlClient{log: slog.New(slog.DiscardHandler), out: make(chan control.Message, 16), connected: true}}
	a.stunServers = []control.STUNServer{{Addr: "203.0.113.10:3478", Alternate: "203.0.113.11:3479"}}
	a.stunUsed = map[netip.AddrPort]time.Time{}
	for _, c := range []string{"203.0.113.11:3479", "203.0.113.11:3478", "203.0.113.10:3479"} {
		a.stunUsed[netip.MustParseAddrPort(c)] = usedAt
	}
	return a, b, &peer{a: a, id: 7, log: slog.New(slog.DiscardHandler)}
}

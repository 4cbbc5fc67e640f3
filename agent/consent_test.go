package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
)

// consentSim drives a consentState on a fake clock, in steps of 100 ms,
// the way consentRun does, with a peer that answers each check after rtt
// (or never, while dead), and records what happened.
type consentSim struct {
	t     *testing.T
	c     consentState
	now   time.Time
	next  time.Time
	dead  bool
	rtt   time.Duration
	sends []time.Time
	due   []time.Time // answers on their way
	verds []consentVerdict
	at    []time.Time
}

func newConsentSim(t *testing.T, dataAt time.Time) *consentSim {
	now := time.Unix(1000, 0)
	if dataAt.IsZero() {
		dataAt = now.Add(-time.Hour)
	}
	return &consentSim{t: t, c: newConsent(now, dataAt), now: now, next: now, rtt: 20 * time.Millisecond}
}

func (s *consentSim) verdict(v consentVerdict) {
	if v != consentSame {
		s.verds = append(s.verds, v)
		s.at = append(s.at, s.now)
	}
}

// run advances the clock by d.
func (s *consentSim) run(d time.Duration, use func(now time.Time) bool) {
	end := s.now.Add(d)
	for s.now.Before(end) {
		s.now = s.now.Add(100 * time.Millisecond)
		woke := false
		if use != nil && use(s.now) {
			s.c.used(s.now)
			woke = true
		}
		if len(s.due) > 0 && !s.due[0].After(s.now) {
			s.due = s.due[1:]
			s.verdict(s.c.answered())
			woke = true
		}
		if !woke && s.now.Before(s.next) {
			continue
		}
		send, v, next := s.c.step(s.now)
		s.verdict(v)
		if v == consentFailed {
			return
		}
		if next.Before(s.now) {
			s.t.Fatalf("next step %v is in the past (now %v)", next, s.now)
		}
		s.next = next
		if send {
			s.sends = append(s.sends, s.now)
			if !s.dead {
				s.due = append(s.due, s.now.Add(s.rtt))
			}
		}
	}
}

func (s *consentSim) sentIn(from, to time.Time) int {
	n := 0
	for _, t := range s.sends {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// TestConsentIdleChecksRarely: an idle tunnel's path is checked every
// consentIdle, not every second; it stays up.
func TestConsentIdleChecksRarely(t *testing.T) {
	s := newConsentSim(t, time.Time{})
	s.run(2*time.Minute, nil)
	if n := len(s.sends); n < 5 || n > 7 {
		t.Errorf("%d checks in 2 min of idle tunnel, want about 6 (one per %v)", n, consentIdle)
	}
	if len(s.verds) != 0 {
		t.Errorf("verdicts on an answering idle path: %v", s.verds)
	}
	if s.c.active(s.now) {
		t.Error("an idle tunnel counts as active")
	}
}

// TestConsentActiveChecksEverySecond: a tunnel carrying data is checked
// every second, and goes back to the idle pace consentActiveFor after
// its last packet.
func TestConsentActiveChecksEverySecond(t *testing.T) {
	s := newConsentSim(t, time.Time{})
	start := s.now
	stopData := start.Add(30 * time.Second)
	s.run(time.Minute, func(now time.Time) bool { return now.Before(stopData) })
	if n := s.sentIn(start, stopData); n < 28 || n > 31 {
		t.Errorf("%d checks in 30 s of traffic, want one a second", n)
	}
	if n := s.sentIn(stopData.Add(consentActiveFor+consentFast), s.now); n > 2 {
		t.Errorf("%d checks in the 24 s after the tunnel went idle, want at most 2", n)
	}
}

// TestConsentActivePathLostIn3s: a path that dies under traffic is lost
// 3-4 s after its death (as pion's 1 s keepalive and 3 s disconnected
// timeout did), failed 10 s later, and a path that answers again before
// is back up.
func TestConsentActivePathLostIn3s(t *testing.T) {
	always := func(time.Time) bool { return true }
	s := newConsentSim(t, time.Time{})
	s.run(10*time.Second, always)
	death := s.now
	s.dead = true
	s.run(20*time.Second, always)
	if len(s.verds) != 2 || s.verds[0] != consentLost || s.verds[1] != consentFailed {
		t.Fatalf("verdicts %v, want lost then failed", s.verds)
	}
	if d := s.at[0].Sub(death); d < consentLostAfter || d > consentLostAfter+consentFast+100*time.Millisecond {
		t.Errorf("lost %v after the path died, want 3-4 s", d)
	}
	if d := s.at[1].Sub(s.at[0]); d != consentFailAfter {
		t.Errorf("failed %v after lost, want %v", d, consentFailAfter)
	}

	s = newConsentSim(t, time.Time{})
	s.run(5*time.Second, always)
	s.dead = true
	s.run(5*time.Second, always)
	s.dead = false
	s.run(3*time.Second, always)
	if len(s.verds) != 2 || s.verds[0] != consentLost || s.verds[1] != consentBack {
		t.Errorf("verdicts %v, want lost then back", s.verds)
	}
}

// TestConsentFirstUseChecksAtOnce: a path that died while idle is
// checked by the first packet that uses it, and lost 3 s later, not at
// the next idle check.
func TestConsentFirstUseChecksAtOnce(t *testing.T) {
	s := newConsentSim(t, time.Time{})
	s.run(25*time.Second, nil) // one idle check at 20 s, answered
	s.dead = true
	s.run(2*time.Second, nil)
	use := s.now
	s.run(10*time.Second, func(now time.Time) bool { return !now.Before(use) })
	if len(s.sends) < 2 || s.sentIn(use, use.Add(200*time.Millisecond)) != 1 {
		t.Errorf("no check within 200 ms of the first packet on an idle path: checks %v, first use %v", s.sends, use)
	}
	if len(s.verds) == 0 || s.verds[0] != consentLost {
		t.Fatalf("verdicts %v, want lost", s.verds)
	}
	if d := s.at[0].Sub(use); d < consentLostAfter || d > consentLostAfter+200*time.Millisecond {
		t.Errorf("lost %v after the first use, want %v", d, consentLostAfter)
	}
}

// TestConsentIdleDeathNoticed: with no traffic at all, a dead path is
// still noticed, at the next idle check plus 3 s.
func TestConsentIdleDeathNoticed(t *testing.T) {
	s := newConsentSim(t, time.Time{})
	s.run(5*time.Second, nil)
	s.dead = true
	s.run(30*time.Second, nil)
	if len(s.verds) == 0 || s.verds[0] != consentLost {
		t.Fatalf("verdicts %v, want lost", s.verds)
	}
	if want := time.Unix(1000, 0).Add(consentIdle + consentLostAfter); s.at[0].Sub(want).Abs() > 200*time.Millisecond {
		t.Errorf("lost at %v, want %v (idle check + 3 s)", s.at[0], want)
	}
}

// TestConsentKickFloodBounded: however often the data path (a member
// sending to us, a busy tunnel) or lost answers wake the machine, checks
// go out at most one per consentFast.
func TestConsentKickFloodBounded(t *testing.T) {
	s := newConsentSim(t, time.Time{})
	s.dead = true
	start := s.now
	var last time.Time
	s.run(12*time.Second, func(now time.Time) bool { return true })
	for _, at := range s.sends {
		if !last.IsZero() && at.Sub(last) < consentFast {
			t.Errorf("checks %v apart", at.Sub(last))
		}
		last = at
	}
	if n := s.sentIn(start, s.now); n > 13 {
		t.Errorf("%d checks in 12 s", n)
	}
}

// TestDirectCheckingTimeout: a direct session whose checks never succeed
// fails after iceCheckingTimeout, as pion's failed timeout made it fail
// before the direct sessions' ICE agents lost that timer (which would
// also end a connected session): the lane is then replaced.
func TestDirectCheckingTimeout(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	p := newPeer(a, control.Node{ID: 2, Name: "b", IP: "100.64.0.2", Online: true}, Key{1}, false)
	ag, err := ice.NewAgentWithOptions(ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled))
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	l := &p.direct
	l.ice, l.state, l.checkingAt = ag, ice.ConnectionStateChecking, start
	l.checkingTimeoutLocked(start.Add(iceCheckingTimeout - time.Second))
	if l.state != ice.ConnectionStateChecking || l.failures != 0 {
		t.Fatalf("failed %v into its checks: state %v", iceCheckingTimeout-time.Second, l.state)
	}
	l.checkingTimeoutLocked(start.Add(iceCheckingTimeout))
	if l.state != ice.ConnectionStateFailed || l.failures != 1 || l.nextTry.IsZero() {
		t.Errorf("still %v after %v of checks (failures %d)", l.state, iceCheckingTimeout, l.failures)
	}
	// The relay lane's sessions keep pion's own timers.
	r := &p.relay
	r.ice, r.state, r.checkingAt = ag, ice.ConnectionStateChecking, start
	r.checkingTimeoutLocked(start.Add(time.Minute))
	if r.state != ice.ConnectionStateChecking {
		t.Errorf("relay lane: %v", r.state)
	}
}

package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestLiveness walks the counters through a working path, one that stops
// answering, and a peer recreated with fresh counters.
func TestLiveness(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var l liveness
	if v, _ := l.judge(at(0)); v != pathDead {
		t.Errorf("no traffic yet: verdict %v, want dead", v)
	}
	l.observe(wgPeerStats{RxBytes: 148, TxBytes: 92}, at(1))
	if v, _ := l.judge(at(2)); v != pathAnswers || l.lastRx != at(1) {
		t.Errorf("after a reply: verdict %v lastRx %v, want answers at %v", v, l.lastRx, at(1))
	}
	// Idle: nothing sent, the last packet vouches for the path a while.
	if v, _ := l.judge(at(1 + 25)); v != pathAnswers {
		t.Errorf("idle 25 s after a packet: verdict %v, want answers", v)
	}
	if v, _ := l.judge(at(1 + 31)); v != pathDead {
		t.Errorf("idle 31 s after a packet: verdict %v, want dead", v)
	}
	// We send, nothing comes back.
	l.observe(wgPeerStats{RxBytes: 148, TxBytes: 200}, at(10))
	l.observe(wgPeerStats{RxBytes: 148, TxBytes: 300}, at(11))
	if l.unanswered != at(10) {
		t.Fatalf("unanswered since %v, want the first unanswered send %v", l.unanswered, at(10))
	}
	for _, c := range []struct {
		s     int
		want  verdict
		quiet time.Duration
	}{{12, pathAnswers, 0}, {13, pathSilent, 3 * time.Second}, {22, pathSilent, 12 * time.Second}, {25, pathDead, 15 * time.Second}} {
		v, q := l.judge(at(c.s))
		if v != c.want || q != c.quiet {
			t.Errorf("%d s after the first unanswered send: verdict %v quiet %v, want %v %v", c.s-10, v, q, c.want, c.quiet)
		}
	}
	if got := noAnswer(12*time.Second + 400*time.Millisecond); got != "no answer for 12 s" {
		t.Errorf("noAnswer: %q", got)
	}
	// An answer clears it; so do counters that restart from zero (the
	// WireGuard peer was recreated) once something arrives.
	l.observe(wgPeerStats{RxBytes: 0, TxBytes: 0}, at(30))
	if l.unanswered != at(10) {
		t.Errorf("zeroed counters alone changed unanswered to %v", l.unanswered)
	}
	l.observe(wgPeerStats{RxBytes: 92, TxBytes: 148}, at(31))
	if v, _ := l.judge(at(32)); v != pathAnswers || !l.unanswered.IsZero() {
		t.Errorf("after an answer on a recreated peer: verdict %v unanswered %v", v, l.unanswered)
	}
}

// TestStatusTellsSilence checks what status makes of a path whose lane is
// down: the last endpoint is "direct" only while the peer answers.
func TestStatusTellsSilence(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	p := newPeer(a, control.Node{ID: 2, Name: "b", IP: "100.64.0.2", Online: true}, Key{1}, false)
	p.active = &p.direct // selected once, ICE no longer up
	now := time.Now()
	p.live = liveness{lastRx: now.Add(-20 * time.Second), unanswered: now.Add(-12 * time.Second)}
	st := p.status(wgPeerStats{}, false, pathEnv{})
	if st.Path != PathDirect || st.Reason != "no answer for 12 s" || st.LastRx == "" {
		t.Errorf("silent 12 s: path %q reason %q last_rx %q, want direct (no answer for 12 s)", st.Path, st.Reason, st.LastRx)
	}
	p.live.unanswered = now.Add(-16 * time.Second)
	st = p.status(wgPeerStats{}, false, pathEnv{})
	if st.Path != PathNone || st.Reason == "" || st.Endpoint != "" {
		t.Errorf("silent 16 s: path %q reason %q endpoint %q, want none with a reason", st.Path, st.Reason, st.Endpoint)
	}
	t.Logf("silent 16 s: %s (%s)", st.Path, st.Reason)
	p.live = liveness{lastRx: now.Add(-time.Second)}
	if st = p.status(wgPeerStats{}, false, pathEnv{}); st.Path != PathDirect || st.Reason != "" {
		t.Errorf("answering: path %q reason %q, want direct", st.Path, st.Reason)
	}
}

// TestLivenessKeepaliveAsksNothing: a WireGuard keepalive (32 bytes) asks
// for no answer (the peer's WireGuard sends none back), so one sent alone
// does not start the silence count; the shared relay's liveness check took
// every relayed path down ("relay silent") 3 s after the controlled side
// turned its keepalives on, and again whenever the two sides' 25 s
// keepalives fell more than 3 s apart. Anything larger still does.
func TestLivenessKeepaliveAsksNothing(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var l liveness
	l.observe(wgPeerStats{RxBytes: 148 + 32, TxBytes: 92}, at(1)) // handshake, the peer's keepalive
	l.observe(wgPeerStats{RxBytes: 180, TxBytes: 92 + 32}, at(2)) // our first keepalive
	if !l.unanswered.IsZero() {
		t.Fatalf("a lone keepalive counted as unanswered since %v", l.unanswered)
	}
	if v, _ := l.judge(at(6)); v != pathAnswers {
		t.Errorf("4 s after our keepalive: verdict %v, want answers", v)
	}
	l.observe(wgPeerStats{RxBytes: 180, TxBytes: 124 + 32}, at(27)) // the next one, 25 s on
	if !l.unanswered.IsZero() {
		t.Fatalf("a periodic keepalive counted as unanswered since %v", l.unanswered)
	}
	l.observe(wgPeerStats{RxBytes: 180, TxBytes: 156 + 148}, at(30)) // a handshake initiation asks
	if l.unanswered != at(30) {
		t.Fatalf("an initiation left unanswered at %v, want %v", l.unanswered, at(30))
	}
}

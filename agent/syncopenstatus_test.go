package agent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
)

// syncTestPeer is a controlling peer whose direct lane holds a real (idle)
// ICE agent in a session that makes a synchronized open; signals go
// nowhere (the control stream is down) and the bind is closed, so the
// opening packets are not sent.
func syncTestPeer(t *testing.T) (*peer, *lane) {
	t.Helper()
	a := &Agent{log: slog.New(slog.DiscardHandler), ctl: &controlClient{}, bind: NewBind()}
	// The coordinator sees the peer where its srflx candidate below is:
	// opening packets go only there (syncopen_attack_test.go).
	p := newPeer(a, control.Node{ID: 2, Name: "b", IP: "100.64.0.2", Online: true, SeenFrom: "203.0.113.7"}, Key{1}, false)
	p.controlling = true
	ag, err := ice.NewAgentWithOptions(ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ag.Close() })
	l := &p.direct
	p.mu.Lock()
	defer p.mu.Unlock()
	l.ice, l.session, l.started, l.answered = ag, "0123456789abcdef", time.Now(), true
	l.order, l.holding = orderSync, true
	if !l.syncBeginLocked() {
		t.Fatal("no synchronized open begun")
	}
	return p, l
}

func punchOf(p *peer) string { return p.status(wgPeerStats{}, false, pathEnv{}).Punch }

// TestStatusShowsSyncOpen: status names a synchronized open in every
// phase while it runs (clock pings, the instant planned, the packets
// sent and checks running) and drops it once the direct path is up.
func TestStatusShowsSyncOpen(t *testing.T) {
	p, l := syncTestPeer(t)
	if got := punchOf(p); !strings.Contains(got, "synchronized open 1: measuring the peer's clock, 0 of 5 pings answered") {
		t.Fatalf("while measuring the clock: punch %q, want the synchronized open named", got)
	}

	// The pings came back (8 ms round trip, the peer's clock 3.1 ms
	// ahead) and the peer's public candidate is here: the instant is set.
	c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{Network: "udp", Address: "203.0.113.7",
		Port: 4000, Component: 1, RelAddr: "10.0.0.2", RelPort: 4000})
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	now := time.Now().UnixNano()
	for i := range syncPings {
		sent := now - int64(8*time.Millisecond) - int64(i)*int64(syncPingGap)
		p.sync.samples = append(p.sync.samples, clockSample{sent: sent, peer: sent + int64(4*time.Millisecond+3100*time.Microsecond), recv: sent + int64(8*time.Millisecond)})
	}
	p.sync.pingsDone = true
	l.held = append(l.held, c)
	l.syncPlanLocked()
	p.mu.Unlock()
	got := punchOf(p)
	if !strings.Contains(got, "synchronized open 1: sending at +") || !strings.Contains(got, "clock offset 3.1 ms ± 4.0 ms") {
		t.Fatalf("planned: punch %q, want when it sends and the clock offset", got)
	}
	t.Logf("planned: %s", got)

	deadline := time.Now().Add(3 * time.Second)
	for {
		p.mu.Lock()
		fired := !p.sync.fired.IsZero()
		p.mu.Unlock()
		if fired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the open never fired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := punchOf(p); !strings.Contains(got, "synchronized open 1: sent") || !strings.Contains(got, "to 1 address, checks running") {
		t.Fatalf("fired: punch %q, want the packets sent and the checks running", got)
	}

	// The direct path is up: the open is over.
	p.mu.Lock()
	l.selected, l.state = true, ice.ConnectionStateConnected
	p.mu.Unlock()
	if got := punchOf(p); got != "" {
		t.Errorf("direct path up: punch %q, want none", got)
	}
	// It connected and then went quiet (the peer stopped): the open is
	// still over, not "sent 20 s ago, checks running".
	p.mu.Lock()
	l.selected, l.state, l.everUp = false, ice.ConnectionStateDisconnected, true
	p.mu.Unlock()
	if got := punchOf(p); got != "" {
		t.Errorf("session connected once, now disconnected: punch %q, want none", got)
	}
}

// TestStatusDropsSkippedSyncOpen: an open given up (no clock sample) or
// a session that failed shows no open; a failed first session shows the
// quiet wait before the next attempt.
func TestStatusDropsSkippedSyncOpen(t *testing.T) {
	p, l := syncTestPeer(t)
	p.mu.Lock()
	p.sync.pingsDone = true
	l.syncPlanLocked() // no sample: released, no open
	p.mu.Unlock()
	if got := punchOf(p); got != "" {
		t.Errorf("open given up: punch %q, want none", got)
	}
	p.mu.Lock()
	l.state = ice.ConnectionStateFailed
	l.quietAfterFailureLocked()
	p.mu.Unlock()
	if got := punchOf(p); !strings.Contains(got, "next direct attempt in 32 s, once stale NAT entries expire") {
		t.Errorf("after a failed first session: punch %q, want the quiet wait", got)
	}
}

// TestStatusShowsPunchHold: a low-TTL opener holding its checks back
// says so, and where it opened; the waiting side too.
func TestStatusShowsPunchHold(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	// The coordinator sees the peer where its srflx candidate below is:
	// opening packets go only there (syncopen_attack_test.go).
	p := newPeer(a, control.Node{ID: 2, Name: "b", IP: "100.64.0.2", Online: true, SeenFrom: "203.0.113.7"}, Key{1}, false)
	l := &p.direct
	l.session, l.started, l.order, l.holding = "0123456789abcdef", time.Now().Add(-400*time.Millisecond), orderOpenLow, true
	l.openedTo = []netip.AddrPort{netip.MustParseAddrPort("198.18.3.2:4000")}
	if got := punchOf(p); !strings.Contains(got, "low-TTL opening toward 198.18.3.2:4000") || !strings.Contains(got, "checks held back 0.4 s") {
		t.Errorf("low-TTL opener: punch %q", got)
	}
	l.order = orderWait
	if got := punchOf(p); !strings.Contains(got, "checks held back 0.4 s until the peer") {
		t.Errorf("waiting side: punch %q", got)
	}
	l.holding = false
	if got := punchOf(p); got != "" {
		t.Errorf("checks released: punch %q, want none", got)
	}
}

package coordinator

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// TestSignalsNeverCloseReceiver: a member flooding another with signals
// fills at most part of the receiver's queue; the excess is dropped, the
// receiver's stream stays, and deltas still fit in.
func TestSignalsNeverCloseReceiver(t *testing.T) {
	s := newTestServer(t)
	key := newKey(t, s.store, true, 0)
	a := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	closed := 0
	c := &streamConn{nodeID: b.NodeID, send: make(chan []byte, sendQueueLen), close: func(string, bool) { closed++ }}
	if err := s.hub.connect(c, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	defer s.hub.disconnect(c)
	for i := range 400 {
		s.hub.relay(a.NodeID, control.Signal{To: b.NodeID, Kind: control.SignalCandidate, Session: "s", Candidate: strings.Repeat("x", i)})
	}
	if closed != 0 {
		t.Fatalf("receiver's stream closed %d times by a signal flood", closed)
	}
	mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "c", PublicKey: newPublicKey(t)})
	s.hub.flushNow()
	if closed != 0 {
		t.Fatal("a delta after a signal flood closed the receiver's stream")
	}
}

func TestSignalBudget(t *testing.T) {
	b := newSignalBudget()
	now := time.Now()
	n := 0
	for range 1000 {
		if b.allow(7, now) {
			n++
		}
	}
	if n != int(signalRatePair.Burst) {
		t.Fatalf("%d signals to one receiver allowed at once, want %v", n, signalRatePair.Burst)
	}
	if !b.allow(8, now) {
		t.Fatal("another receiver shares the first one's budget")
	}
	if !b.allow(7, now.Add(time.Second)) {
		t.Fatal("the pair's budget did not refill")
	}
	// Spread over many receivers, the sender-wide budget holds.
	n = 0
	for i := range 10000 {
		if b.allow(uint64(100+i), now.Add(time.Second)) {
			n++
		}
	}
	if n > int(signalRateSender.Burst) {
		t.Fatalf("%d signals allowed to many receivers, more than the sender's burst %v", n, signalRateSender.Burst)
	}
	if len(b.pairs) > maxSignalPairs {
		t.Fatalf("%d pair buckets held", len(b.pairs))
	}
}

// TestOversizeSignalDropped: a signal over the size cap is dropped and
// counted; the sender's stream stays up and its next signal goes through.
func TestOversizeSignalDropped(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, a.Credential)
	readMsg(t, ca)
	cb := dialStream(t, base, b.Credential)
	readMsg(t, cb)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	send := func(kind, cand string) {
		frame := `{"type":"signal","signal":{"to":` + strconv.FormatUint(b.NodeID, 10) + `,"kind":"` + kind + `","session":"s","candidate":"` + cand + `"}}`
		if err := ca.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	send("candidate", strings.Repeat("x", 8<<10))
	send(strings.Repeat("k", 1000), "y")
	send("candidate", "ok")
	m := readUntil(t, cb, 5*time.Second, func(m control.Message) bool { return m.Type == control.MsgSignal })
	if m.Signal.Candidate != "ok" {
		t.Fatalf("first signal through is %q..., want the small one", m.Signal.Candidate[:min(20, len(m.Signal.Candidate))])
	}
}

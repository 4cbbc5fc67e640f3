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

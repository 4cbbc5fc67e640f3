package hub_test

import (
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// TestSignalsNeverCloseReceiver: a member flooding another with signals
// fills at most part of the receiver's queue; the excess is dropped, the
// receiver's stream stays, and deltas still fit in.
func TestSignalsNeverCloseReceiver(t *testing.T) {
	m := newMesh(t, 0)
	a, b := m.add("a"), m.add("b")
	c := hubtest.NewConnFrom(b, "", hub.QueueLen)
	attach(t, m.Hub, c, 2)
	defer m.Detach(c.Stream)
	for i := range 400 {
		m.Signal(a, control.Signal{To: b, Kind: control.SignalCandidate, Session: "s", Candidate: strings.Repeat("x", i)})
	}
	if c.Closed != 0 {
		t.Fatalf("receiver's stream closed %d times by a signal flood", c.Closed)
	}
	m.add("c")
	m.Flush()
	if c.Closed != 0 {
		t.Fatal("a delta after a signal flood closed the receiver's stream")
	}
}

package hub_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// restoredMesh is a hub restarted on a store that holds n nodes online,
// with restart grace grace.
func restoredMesh(t *testing.T, n int, grace time.Duration) *hub.Hub {
	t.Helper()
	var nodes []control.Node
	for i := 1; i <= n; i++ {
		id := uint64(i)
		nodes = append(nodes, control.Node{ID: id, Name: "n" + strconv.Itoa(i), IP: "100.64.0." + strconv.Itoa(i),
			PublicKey: "key-" + strconv.Itoa(i), Online: true})
	}
	h, err := hub.New(t.Context(), hub.Config{Store: hubtest.NewStore(nodes...), BatchWindow: time.Hour, RestartGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Shutdown)
	return h
}

func online(h *hub.Hub, id uint64) bool {
	n, _ := h.Node(id)
	return n.Online
}

// TestRestartSweepWaitsForStorm: after a restart, nodes that were online
// stay so while their agents are still coming back, past the restart
// grace: a storm of full netmaps outlasts it (10,000 agents, 51-107 s on a
// small machine), and marking the agents still on their way offline, then
// online again, filled the ring with two batches of thousands of nodes
// (the next storm's resumes missed: "ring", "too_many"). Once the returns
// stop, the nodes that did not come back are marked offline.
func TestRestartSweepWaitsForStorm(t *testing.T) {
	const n = 50
	grace := 600 * time.Millisecond
	h := restoredMesh(t, n, grace)
	start := time.Now()
	// Agents 1..n-1 come back one every 20 ms (1 s in all); n never does.
	for i := 1; i < n; i++ {
		attach(t, h, hubtest.NewConn(uint64(i)), 2)
		for id := uint64(i + 1); id <= n; id++ {
			if !online(h, id) {
				t.Fatalf("node %d marked offline %v after the restart (grace %v) while agents were still coming back (%d of %d back)",
					id, time.Since(start).Round(time.Millisecond), grace, i, n)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * grace)
	for online(h, n) {
		if time.Now().After(deadline) {
			t.Fatalf("node %d, which never came back, still online %v after the returns stopped", n, 2*grace)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := uint64(1); i < n; i++ {
		if !online(h, i) {
			t.Fatalf("node %d, back with a stream, marked offline", i)
		}
	}
}

// TestRestartSweepNotHeldByOneMember: a member reconnecting in a loop
// after a restart (stream replaced, or offline and online again) does not
// put off marking offline the nodes that did not come back.
func TestRestartSweepNotHeldByOneMember(t *testing.T) {
	grace := 300 * time.Millisecond
	h := restoredMesh(t, 3, grace)
	start := time.Now()
	for time.Since(start) < 4*grace && online(h, 3) {
		for _, id := range []uint64{1, 2} {
			c := hubtest.NewConn(id)
			attach(t, h, c, 2)
			if id == 2 {
				h.Detach(c.Stream)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if online(h, 3) {
		t.Fatalf("node 3, which never came back, still online %v after a restart with grace %v: members reconnecting in a loop held the sweep off",
			time.Since(start).Round(time.Millisecond), grace)
	}
}

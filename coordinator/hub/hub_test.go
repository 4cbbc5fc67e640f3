package hub_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// mesh is a hub on a store in memory, with nodes added as registrations
// would.
type mesh struct {
	*hub.Hub
	store   *hubtest.Store
	metrics *hub.Metrics
	next    uint64
}

// newMesh makes a hub with batch window window (time.Hour: it sends only
// when the test flushes).
func newMesh(t testing.TB, window time.Duration) *mesh {
	t.Helper()
	m := &mesh{store: hubtest.NewStore(), metrics: hub.NewMetrics(nil)}
	h, err := hub.New(t.Context(), hub.Config{Store: m.store, Metrics: m.metrics, BatchWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Shutdown)
	m.Hub = h
	return m
}

// batchMesh is a hub that sends only when the test says so.
func batchMesh(t testing.TB) *mesh { return newMesh(t, time.Hour) }

// add registers a node named name and returns its ID.
func (m *mesh) add(name string) uint64 {
	m.next++
	id := m.next
	m.Upsert(control.Node{ID: id, Name: name, IP: "100.64.0." + strconv.FormatUint(id, 10), PublicKey: "key-" + strconv.FormatUint(id, 10)})
	return id
}

func attach(t testing.TB, h *hub.Hub, c *hubtest.Conn, version int) {
	t.Helper()
	if err := h.Attach(t.Context(), c.Stream, version, "", control.Netmap{}); err != nil {
		t.Fatal(err)
	}
}

func TestHubBatchesChanges(t *testing.T) {
	m := batchMesh(t)
	obs := hubtest.NewConn(m.add("observer"))
	attach(t, m.Hub, obs, 2)
	m.Flush()
	obs.Drain(t)
	before := m.metrics.DeltaFrames.With().Get()

	var ids []uint64
	for i := range 40 {
		ids = append(ids, m.add("n"+string(rune('a'+i%26))))
	}
	if got := obs.Drain(t); len(got) != 0 {
		t.Fatalf("%d frames before the batch window ended", len(got))
	}
	m.Flush()
	got := obs.Drain(t)
	if len(got) != 1 || got[0].Type != control.MsgDelta {
		t.Fatalf("want one delta for 40 changes, got %d frames", len(got))
	}
	var upserted []uint64
	for _, n := range got[0].Delta.Upsert {
		upserted = append(upserted, n.ID)
	}
	if !slices.Equal(upserted, ids) {
		t.Fatalf("delta names %v, want %v", upserted, ids)
	}
	if d := m.metrics.DeltaFrames.With().Get() - before; d != 1 {
		t.Fatalf("delta frames metric moved by %v, want 1", d)
	}
	// Nothing pending: a flush sends nothing.
	m.Flush()
	if got := obs.Drain(t); len(got) != 0 {
		t.Fatalf("empty flush sent %d frames", len(got))
	}
}

func TestHubFlushesWithinWindow(t *testing.T) {
	m := newMesh(t, 0)
	obs := hubtest.NewConn(m.add("observer"))
	attach(t, m.Hub, obs, 2)
	obs.Drain(t)
	id := m.add("late")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-obs.Queue():
			var msg control.Message
			if err := json.Unmarshal(b, &msg); err != nil {
				t.Fatal(err)
			}
			if msg.Delta != nil && slices.ContainsFunc(msg.Delta.Upsert, func(n control.Node) bool { return n.ID == id }) {
				return
			}
		case <-deadline:
			t.Fatal("change not sent by the flusher within 5s")
		}
	}
}

func TestHubVersion1NeverSeesItself(t *testing.T) {
	m := batchMesh(t)
	v1 := hubtest.NewConn(m.add("old"))
	v2 := hubtest.NewConn(m.add("new"))
	other := m.add("other")
	m.Flush()
	attach(t, m.Hub, v1, 1)
	attach(t, m.Hub, v2, 2)
	// Both connects and a change of another node are in one batch.
	o, _ := m.Node(other)
	m.Upsert(control.Node{ID: other, Name: "renamed", IP: o.IP, PublicKey: o.PublicKey})
	m.Flush()

	check := func(c *hubtest.Conn, version int, wantSelf bool) {
		t.Helper()
		msgs := c.Drain(t)
		if len(msgs) != 2 || msgs[0].Type != control.MsgNetmap || msgs[0].Netmap.Self.ID != c.Node() {
			t.Fatalf("node %d: want netmap then one delta, got %+v", c.Node(), msgs)
		}
		sawSelf := slices.ContainsFunc(msgs[1].Delta.Upsert, func(n control.Node) bool { return n.ID == c.Node() })
		if sawSelf != wantSelf {
			t.Fatalf("node %d (v%d): delta names itself %v, want %v", c.Node(), version, sawSelf, wantSelf)
		}
		if !slices.ContainsFunc(msgs[1].Delta.Upsert, func(n control.Node) bool { return n.ID == other && n.Name == "renamed" }) {
			t.Fatalf("node %d: rename missing from %+v", c.Node(), msgs[1].Delta)
		}
	}
	check(v1, 1, false)
	check(v2, 2, true)
}

func TestHubRemove(t *testing.T) {
	m := batchMesh(t)
	obs := hubtest.NewConn(m.add("observer"))
	gone := hubtest.NewConn(m.add("gone"))
	for _, c := range []*hubtest.Conn{obs, gone} {
		attach(t, m.Hub, c, 2)
	}
	m.Flush()
	obs.Drain(t)
	if !m.Remove(gone.Node(), "node removed") {
		t.Fatal("remove: node not known")
	}
	if gone.Closed != 1 {
		t.Fatalf("removed node's stream closed %d times", gone.Closed)
	}
	m.Flush()
	msgs := obs.Drain(t)
	if len(msgs) != 1 || !slices.Equal(msgs[0].Delta.Remove, []uint64{gone.Node()}) || len(msgs[0].Delta.Upsert) != 0 {
		t.Fatalf("want one removal delta, got %+v", msgs)
	}
	if c := m.Counts(); c.Nodes != 1 || c.Online != 1 || c.Streams != 1 {
		t.Fatalf("counts after remove: nodes %d online %d streams %d", c.Nodes, c.Online, c.Streams)
	}
	if m.Remove(gone.Node(), "again") {
		t.Fatal("second remove found the node")
	}
}

// TestHubDeltasConvergeToNetmap drives random changes with random batch
// boundaries and checks that an agent that applied its netmap and every
// delta ends with exactly the view a fresh netmap gives.
func TestHubDeltasConvergeToNetmap(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { testConverge(t, seed) })
	}
}

func testConverge(t *testing.T, seed uint64) {
	m := batchMesh(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	obs := hubtest.NewConn(m.add("observer"))
	attach(t, m.Hub, obs, 2)
	var v hubtest.View
	conns := map[uint64]*hubtest.Conn{}
	var known []uint64
	for step := range 300 {
		switch op := rng.IntN(10); {
		case op < 3 || len(known) == 0:
			known = append(known, m.add("n"))
		case op < 5:
			id := known[rng.IntN(len(known))]
			if conns[id] == nil {
				c := hubtest.NewConn(id)
				if err := m.Attach(t.Context(), c.Stream, 2, "", control.Netmap{}); err == nil {
					conns[id] = c
				}
			}
		case op < 7:
			for id, c := range conns {
				m.Detach(c.Stream)
				delete(conns, id)
				break
			}
		case op < 8:
			i := rng.IntN(len(known))
			m.Remove(known[i], "removed")
			delete(conns, known[i])
			known = slices.Delete(known, i, i+1)
		default:
			m.Flush()
		}
		if step%7 == 0 {
			for _, msg := range obs.Drain(t) {
				v.Apply(t, msg)
			}
		}
	}
	m.Flush()
	for _, msg := range obs.Drain(t) {
		v.Apply(t, msg)
	}

	// A fresh stream of the observer's node: its netmap is the truth.
	fresh := hubtest.NewConn(obs.Node())
	attach(t, m.Hub, fresh, 2)
	msgs := fresh.Drain(t)
	var want hubtest.View
	want.Apply(t, msgs[0])
	if len(want.Peers) != len(known) {
		t.Fatalf("fresh netmap has %d peers, %d nodes exist", len(want.Peers), len(known))
	}
	// The netmap (cut from the cached blob and patched) equals the hub's
	// nodes; the Self field matches too.
	for _, n := range m.Nodes() {
		if n.ID == obs.Node() {
			if !reflect.DeepEqual(want.Self, n) {
				t.Fatalf("netmap self %+v, hub %+v", want.Self, n)
			}
			continue
		}
		if !reflect.DeepEqual(want.Peers[n.ID], n) {
			t.Fatalf("netmap has %+v for node %d, hub %+v", want.Peers[n.ID], n.ID, n)
		}
	}
	if !reflect.DeepEqual(v.Peers, want.Peers) {
		for id, n := range want.Peers {
			if !reflect.DeepEqual(v.Peers[id], n) {
				t.Errorf("node %d: agent has %+v, netmap %+v", id, v.Peers[id], n)
			}
		}
		for id := range v.Peers {
			if _, ok := want.Peers[id]; !ok {
				t.Errorf("agent still has removed node %d", id)
			}
		}
		t.FailNow()
	}
}

func TestHubPersistsOnlineInBatches(t *testing.T) {
	m := batchMesh(t)
	c := hubtest.NewConn(m.add("a"))
	attach(t, m.Hub, c, 2)
	if m.store.Online(c.Node()) {
		t.Fatal("online written before the batch")
	}
	m.Flush()
	if !m.store.Online(c.Node()) {
		t.Fatal("online not written by the batch")
	}
	m.Detach(c.Stream)
	m.Flush()
	if m.store.Online(c.Node()) {
		t.Fatal("offline not written by the batch")
	}
}

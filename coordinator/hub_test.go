package coordinator

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// fakeConn is a stream with a deep queue, decoded on demand.
type fakeConn struct {
	*streamConn
	closed int
}

func newFakeConn(id uint64) *fakeConn {
	f := &fakeConn{}
	f.streamConn = &streamConn{nodeID: id, send: make(chan []byte, 4096), close: func(string, bool) { f.closed++ }}
	return f
}

// drain returns the frames queued so far.
func (f *fakeConn) drain(t *testing.T) []control.Message {
	t.Helper()
	var out []control.Message
	if f.netmap != nil {
		var m control.Message
		if err := json.Unmarshal(f.netmap.bytes(), &m); err != nil {
			t.Fatalf("netmap %q: %v", f.netmap.bytes(), err)
		}
		out = append(out, m)
		f.netmap = nil
	}
	for {
		select {
		case b := <-f.send:
			var m control.Message
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("frame %q: %v", b, err)
			}
			out = append(out, m)
		default:
			return out
		}
	}
}

// view is an agent's picture of the mesh, built the way the agent builds it.
type view struct {
	self  control.Node
	peers map[uint64]control.Node
}

func (v *view) apply(t *testing.T, m control.Message) {
	t.Helper()
	switch m.Type {
	case control.MsgNetmap:
		v.self = m.Netmap.Self
		v.peers = map[uint64]control.Node{}
		for _, n := range m.Netmap.Peers {
			v.peers[n.ID] = n
		}
	case control.MsgDelta:
		if v.peers == nil {
			t.Fatal("delta before netmap")
		}
		for _, id := range m.Delta.Remove {
			delete(v.peers, id)
		}
		for _, n := range m.Delta.Upsert {
			if n.ID == v.self.ID {
				v.self = n
				continue
			}
			v.peers[n.ID] = n
		}
	default:
		t.Fatalf("unexpected frame %+v", m)
	}
}

// batchServer is a server whose hub sends only when the test says so.
func batchServer(t *testing.T) (*Server, string) {
	s := newTestServer(t)
	s.hub.window = time.Hour // before any change wakes the flusher
	return s, newKey(t, s.store, true, 0)
}

func addNode(t *testing.T, s *Server, key, name string) uint64 {
	t.Helper()
	return mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: name, PublicKey: newPublicKey(t)}).NodeID
}

func TestHubBatchesChanges(t *testing.T) {
	s, key := batchServer(t)
	obs := newFakeConn(addNode(t, s, key, "observer"))
	if err := s.hub.connect(obs.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	s.hub.flushNow()
	obs.drain(t)
	before := s.metrics.deltaFrames.With().Get()

	var ids []uint64
	for i := range 40 {
		ids = append(ids, addNode(t, s, key, "n"+string(rune('a'+i%26))))
	}
	if got := obs.drain(t); len(got) != 0 {
		t.Fatalf("%d frames before the batch window ended", len(got))
	}
	s.hub.flushNow()
	got := obs.drain(t)
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
	if d := s.metrics.deltaFrames.With().Get() - before; d != 1 {
		t.Fatalf("delta frames metric moved by %v, want 1", d)
	}
	// Nothing pending: a flush sends nothing.
	s.hub.flushNow()
	if got := obs.drain(t); len(got) != 0 {
		t.Fatalf("empty flush sent %d frames", len(got))
	}
}

func TestHubFlushesWithinWindow(t *testing.T) {
	s := newTestServer(t)
	key := newKey(t, s.store, true, 0)
	obs := newFakeConn(addNode(t, s, key, "observer"))
	if err := s.hub.connect(obs.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	obs.drain(t)
	id := addNode(t, s, key, "late")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-obs.send:
			var m control.Message
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if m.Delta != nil && slices.ContainsFunc(m.Delta.Upsert, func(n control.Node) bool { return n.ID == id }) {
				return
			}
		case <-deadline:
			t.Fatal("change not sent by the flusher within 5s")
		}
	}
}

func TestHubVersion1NeverSeesItself(t *testing.T) {
	s, key := batchServer(t)
	v1 := newFakeConn(addNode(t, s, key, "old"))
	v2 := newFakeConn(addNode(t, s, key, "new"))
	other := addNode(t, s, key, "other")
	s.hub.flushNow()
	if err := s.hub.connect(v1.streamConn, 1, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	if err := s.hub.connect(v2.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	// Both connects and a change of another node are in one batch.
	s.hub.upsert(control.Node{ID: other, Name: "renamed", IP: s.hub.nodes[other].IP, PublicKey: s.hub.nodes[other].PublicKey})
	s.hub.flushNow()

	check := func(c *fakeConn, wantSelf bool) {
		t.Helper()
		msgs := c.drain(t)
		if len(msgs) != 2 || msgs[0].Type != control.MsgNetmap || msgs[0].Netmap.Self.ID != c.nodeID {
			t.Fatalf("node %d: want netmap then one delta, got %+v", c.nodeID, msgs)
		}
		sawSelf := slices.ContainsFunc(msgs[1].Delta.Upsert, func(n control.Node) bool { return n.ID == c.nodeID })
		if sawSelf != wantSelf {
			t.Fatalf("node %d (v%d): delta names itself %v, want %v", c.nodeID, c.version, sawSelf, wantSelf)
		}
		if !slices.ContainsFunc(msgs[1].Delta.Upsert, func(n control.Node) bool { return n.ID == other && n.Name == "renamed" }) {
			t.Fatalf("node %d: rename missing from %+v", c.nodeID, msgs[1].Delta)
		}
	}
	check(v1, false)
	check(v2, true)
}

func TestHubRemove(t *testing.T) {
	s, key := batchServer(t)
	obs := newFakeConn(addNode(t, s, key, "observer"))
	gone := newFakeConn(addNode(t, s, key, "gone"))
	for _, c := range []*fakeConn{obs, gone} {
		if err := s.hub.connect(c.streamConn, 2, control.Netmap{}); err != nil {
			t.Fatal(err)
		}
	}
	s.hub.flushNow()
	obs.drain(t)
	if !s.hub.remove(gone.nodeID, "node removed") {
		t.Fatal("remove: node not known")
	}
	if gone.closed != 1 {
		t.Fatalf("removed node's stream closed %d times", gone.closed)
	}
	s.hub.flushNow()
	msgs := obs.drain(t)
	if len(msgs) != 1 || !slices.Equal(msgs[0].Delta.Remove, []uint64{gone.nodeID}) || len(msgs[0].Delta.Upsert) != 0 {
		t.Fatalf("want one removal delta, got %+v", msgs)
	}
	if n, online, streams := s.hub.counts(); n != 1 || online != 1 || streams != 1 {
		t.Fatalf("counts after remove: nodes %d online %d streams %d", n, online, streams)
	}
	if s.hub.remove(gone.nodeID, "again") {
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
	s, key := batchServer(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	obs := newFakeConn(addNode(t, s, key, "observer"))
	if err := s.hub.connect(obs.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	var v view
	conns := map[uint64]*fakeConn{}
	var known []uint64
	for step := range 300 {
		switch op := rng.IntN(10); {
		case op < 3 || len(known) == 0:
			known = append(known, addNode(t, s, key, "n"))
		case op < 5:
			id := known[rng.IntN(len(known))]
			if conns[id] == nil {
				c := newFakeConn(id)
				if err := s.hub.connect(c.streamConn, 2, control.Netmap{}); err == nil {
					conns[id] = c
				}
			}
		case op < 7:
			for id, c := range conns {
				s.hub.disconnect(c.streamConn)
				delete(conns, id)
				break
			}
		case op < 8:
			i := rng.IntN(len(known))
			s.hub.remove(known[i], "removed")
			delete(conns, known[i])
			known = slices.Delete(known, i, i+1)
		default:
			s.hub.flushNow()
		}
		if step%7 == 0 {
			for _, m := range obs.drain(t) {
				v.apply(t, m)
			}
		}
	}
	s.hub.flushNow()
	for _, m := range obs.drain(t) {
		v.apply(t, m)
	}

	// A fresh stream of the observer's node: its netmap is the truth.
	fresh := newFakeConn(obs.nodeID)
	if err := s.hub.connect(fresh.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	msgs := fresh.drain(t)
	var want view
	want.apply(t, msgs[0])
	if len(want.peers) != len(known) {
		t.Fatalf("fresh netmap has %d peers, %d nodes exist", len(want.peers), len(known))
	}
	// The netmap (cut from the cached blob and patched) equals the hub's
	// nodes; the Self field matches too.
	for id, n := range s.hub.nodes {
		if id == obs.nodeID {
			if !reflect.DeepEqual(want.self, n) {
				t.Fatalf("netmap self %+v, hub %+v", want.self, n)
			}
			continue
		}
		if !reflect.DeepEqual(want.peers[id], n) {
			t.Fatalf("netmap has %+v for node %d, hub %+v", want.peers[id], id, n)
		}
	}
	if !reflect.DeepEqual(v.peers, want.peers) {
		for id, n := range want.peers {
			if !reflect.DeepEqual(v.peers[id], n) {
				t.Errorf("node %d: agent has %+v, netmap %+v", id, v.peers[id], n)
			}
		}
		for id := range v.peers {
			if _, ok := want.peers[id]; !ok {
				t.Errorf("agent still has removed node %d", id)
			}
		}
		t.FailNow()
	}
}

func TestHubPersistsOnlineInBatches(t *testing.T) {
	s, key := batchServer(t)
	c := newFakeConn(addNode(t, s, key, "a"))
	if err := s.hub.connect(c.streamConn, 2, control.Netmap{}); err != nil {
		t.Fatal(err)
	}
	if onlineByID(t, s.store)[c.nodeID] {
		t.Fatal("online written before the batch")
	}
	s.hub.flushNow()
	if !onlineByID(t, s.store)[c.nodeID] {
		t.Fatal("online not written by the batch")
	}
	s.hub.disconnect(c.streamConn)
	s.hub.flushNow()
	if onlineByID(t, s.store)[c.nodeID] {
		t.Fatal("offline not written by the batch")
	}
}

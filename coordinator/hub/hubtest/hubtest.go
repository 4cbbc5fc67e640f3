// Package hubtest has fakes for tests of the hub and of the server around
// it: a stream that keeps its frames, an agent's view built from them, and
// a store in memory.
package hubtest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// Conn is a hub stream with a deep queue, decoded on demand.
type Conn struct {
	*hub.Stream
	// Closed counts the hub's calls to close the stream.
	Closed int
}

// NewConn makes a stream of node id with a queue of 4096 frames.
func NewConn(id uint64) *Conn { return NewConnFrom(id, "", 4096) }

// NewConnFrom makes a stream of node id from address from with a queue of
// queue frames.
func NewConnFrom(id uint64, from string, queue int) *Conn {
	c := &Conn{}
	c.Stream = hub.NewStream(id, from, queue, func(string, bool) { c.Closed++ })
	return c
}

// Drain returns the frames queued so far, the netmap first.
func (c *Conn) Drain(t testing.TB) []control.Message {
	t.Helper()
	var out []control.Message
	if f := c.Netmap(); f != nil {
		var m control.Message
		if err := json.Unmarshal(f.Bytes(), &m); err != nil {
			t.Fatalf("netmap %q: %v", f.Bytes(), err)
		}
		out = append(out, m)
	}
	for {
		select {
		case b := <-c.Queue():
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

// View is an agent's picture of the mesh, built the way the agent builds it.
type View struct {
	Self  control.Node
	Peers map[uint64]control.Node
}

// Apply applies a netmap or a delta.
func (v *View) Apply(t testing.TB, m control.Message) {
	t.Helper()
	switch m.Type {
	case control.MsgNetmap:
		v.Self = m.Netmap.Self
		v.Peers = map[uint64]control.Node{}
		for _, n := range m.Netmap.Peers {
			v.Peers[n.ID] = n
		}
	case control.MsgDelta:
		if v.Peers == nil {
			t.Fatal("delta before netmap")
		}
		for _, id := range m.Delta.Remove {
			delete(v.Peers, id)
		}
		for _, n := range m.Delta.Upsert {
			if n.ID == v.Self.ID {
				v.Self = n
				continue
			}
			v.Peers[n.ID] = n
		}
	default:
		t.Fatalf("unexpected frame %+v", m)
	}
}

// Store is a hub.Store in memory, for a coordinator of its own.
type Store struct {
	mu      sync.Mutex
	nodes   []control.Node
	seen    map[uint64]hub.Seen
	version *hub.Version
}

var _ hub.Store = (*Store)(nil)

// NewStore holds nodes as the members the hub loads.
func NewStore(nodes ...control.Node) *Store {
	return &Store{nodes: nodes, seen: map[uint64]hub.Seen{}}
}

// ListNodes returns the nodes the store was made with.
func (s *Store) ListNodes(context.Context) ([]control.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodes), nil
}

// Policy returns nil: no policy.
func (s *Store) Policy(context.Context) ([]byte, error) { return nil, nil }

// SaveSeen keeps the last state saved of each node, and the version.
func (s *Store) SaveSeen(_ context.Context, seen map[uint64]hub.Seen, v *hub.Version) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, v := range seen {
		if v.Touch { // only last_seen moves
			old := s.seen[id]
			old.LastSeen = v.LastSeen
			v = old
		}
		s.seen[id] = v
	}
	if v != nil {
		c := *v
		s.version = &c
	}
	return nil, nil
}

// NetmapVersion returns the version saved last.
func (s *Store) NetmapVersion(context.Context) (hub.Version, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.version == nil {
		return hub.Version{}, false, nil
	}
	return *s.version, true, nil
}

// LoadBatches returns none: this store keeps no batches, so a hub
// restarted on it rebuilds no ring.
func (s *Store) LoadBatches(context.Context, string, uint64) ([]hub.Batch, error) {
	return nil, nil
}

// Online tells whether the store holds node id as online.
func (s *Store) Online(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id].Online
}

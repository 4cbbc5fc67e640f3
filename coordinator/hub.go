package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// errHubClosed refuses streams once shutdown has begun.
var errHubClosed = errors.New("coordinator shutting down")

// hub is the live view of the mesh: every node, and the stream of each
// connected one. It fans out each change as one small delta per connected
// agent. Holding mu while changing a node and queueing its delta is what
// keeps the order every agent sees equal to the order changes happened.
//
// The server process is the only writer of nodes while it runs, so the
// in-memory map stays equal to the store's members: admin commands that
// change nodes go through the server's admin socket (see admin.go).
type hub struct {
	log   *slog.Logger
	store *Store

	mu     sync.Mutex
	nodes  map[uint64]control.Node
	conns  map[uint64]*streamConn
	closed bool
}

// streamConn is the hub's side of one agent stream: a bounded queue of
// encoded frames and a way to end the stream.
type streamConn struct {
	nodeID uint64
	send   chan []byte
	// close ends the stream (once). Graceful closes send the reason to the
	// agent and wait for its answer; others just drop the connection, for
	// agents that are dead or too slow to take part in a handshake.
	close func(reason string, graceful bool)
	// dropped is set, under hub.mu, once the hub gave up on this stream, so
	// nothing more is queued to it.
	dropped bool
}

func newHub(ctx context.Context, store *Store, log *slog.Logger) (*hub, error) {
	nodes, err := store.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("load nodes: %w", err)
	}
	h := &hub{
		log:   log,
		store: store,
		nodes: make(map[uint64]control.Node, len(nodes)),
		conns: map[uint64]*streamConn{},
	}
	for _, n := range nodes {
		h.nodes[n.ID] = n
	}
	return h, nil
}

// dbTimeout bounds store writes made while holding the hub lock.
const dbTimeout = 10 * time.Second

// upsert records a node that registered or changed and tells the others.
// Online and LastSeen belong to the hub (they follow streams), so they are
// kept from the hub's copy.
func (h *hub) upsert(n control.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.nodes[n.ID]; ok {
		n.Online, n.LastSeen = old.Online, old.LastSeen
		if sameNode(old, n) {
			return // a re-registration that changed nothing peers see
		}
	}
	h.nodes[n.ID] = n
	h.broadcastLocked(n)
}

// connect attaches a stream: the node goes online, the stream gets the full
// netmap as its first frame, and the others get a delta. A previous stream
// of the same node is closed, since an agent holds one stream at a time.
// servers carries the netmap's server fields (STUN, ...); connect fills in
// Self and Peers.
func (h *hub) connect(c *streamConn, version int, servers control.Netmap) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errHubClosed
	}
	self, ok := h.nodes[c.nodeID]
	if !ok {
		return fmt.Errorf("node %d not known", c.nodeID)
	}
	if old := h.conns[c.nodeID]; old != nil {
		h.log.Info("replacing stream", "node", c.nodeID)
		old.dropped = true
		old.close("replaced by a newer stream", true)
	}
	h.conns[c.nodeID] = c

	self.Online, self.LastSeen = true, time.Now().UTC()
	h.nodes[self.ID] = self
	h.persistOnlineLocked(self)

	peers := make([]control.Node, 0, len(h.nodes))
	for id, n := range h.nodes {
		if id != self.ID {
			peers = append(peers, n)
		}
	}
	slices.SortFunc(peers, func(a, b control.Node) int { return cmp.Compare(a.ID, b.ID) })
	if servers.STUN == nil {
		servers.STUN = []string{}
	}
	nm := servers
	nm.Self, nm.Peers = self, peers
	frame, err := json.Marshal(control.Message{
		Type:    control.MsgNetmap,
		Version: version,
		Netmap:  &nm,
	})
	if err != nil {
		return fmt.Errorf("encode netmap: %w", err)
	}
	h.enqueueLocked(c, frame)
	h.broadcastLocked(self)
	return nil
}

// disconnect detaches a stream that ended and reports whether the node went
// offline. If a newer stream of the node already replaced it, the node stays
// online.
func (h *hub) disconnect(c *streamConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[c.nodeID] != c {
		return false
	}
	delete(h.conns, c.nodeID)
	n, ok := h.nodes[c.nodeID]
	if !ok {
		return false
	}
	n.Online, n.LastSeen = false, time.Now().UTC()
	h.nodes[n.ID] = n
	h.persistOnlineLocked(n)
	h.broadcastLocked(n)
	return true
}

// touch records that a node's stream is alive. Peers are not told: a
// last-seen tick is not worth a delta to every agent.
func (h *hub) touch(id uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if err := h.store.Touch(ctx, id, time.Now()); err != nil {
		h.log.Warn("update last seen", "node", id, "err", err)
	}
}

// relay forwards a signal to its target's stream. From is always the
// sender, whatever the sender claimed.
func (h *hub) relay(from uint64, sig control.Signal) {
	sig.From = from
	if sig.To == 0 || sig.To == from {
		h.log.Debug("dropping signal with bad target", "from", from, "to", sig.To)
		return
	}
	frame, err := json.Marshal(control.Message{Type: control.MsgSignal, Signal: &sig})
	if err != nil {
		h.log.Warn("encode signal", "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.peersLocked(from, sig.To) {
		h.log.Info("dropping signal between nodes that are not peers", "from", from, "to", sig.To, "kind", sig.Kind)
		return
	}
	c := h.conns[sig.To]
	if c == nil {
		h.log.Debug("dropping signal for offline node", "from", from, "to", sig.To, "kind", sig.Kind)
		return
	}
	h.enqueueLocked(c, frame)
}

// closeAll ends every stream and refuses new ones.
func (h *hub) closeAll(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, c := range h.conns {
		c.close(reason, true)
	}
}

// broadcastLocked sends n as a delta to every connected node but n itself.
// The frame is encoded once; each agent costs one queue push.
func (h *hub) broadcastLocked(n control.Node) {
	if len(h.conns) == 0 {
		return
	}
	frame, err := json.Marshal(control.Message{Type: control.MsgDelta, Delta: &control.Delta{Upsert: []control.Node{n}}})
	if err != nil {
		h.log.Warn("encode delta", "err", err)
		return
	}
	for id, c := range h.conns {
		if id != n.ID {
			h.enqueueLocked(c, frame)
		}
	}
}

// enqueueLocked queues a frame without blocking. An agent too slow to drain
// its queue is disconnected rather than allowed to stall the hub; it
// reconnects and starts over from a full netmap.
func (h *hub) enqueueLocked(c *streamConn, frame []byte) {
	if c.dropped {
		return
	}
	select {
	case c.send <- frame:
	default:
		h.log.Warn("stream send queue full, closing", "node", c.nodeID)
		c.dropped = true
		c.close("send queue overflow", false)
	}
}

func (h *hub) persistOnlineLocked(n control.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if err := h.store.SetOnline(ctx, n.ID, n.Online, n.LastSeen); err != nil {
		h.log.Warn("persist online state", "node", n.ID, "err", err)
	}
}

package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// ErrClosed refuses streams once shutdown has begun.
var ErrClosed = errors.New("coordinator shutting down")

// defaultMaxHold bounds the extra wait for slow writers (see Hub.backlog),
// so one stuck agent cannot slow everyone else by more than this.
const defaultMaxHold = 500 * time.Millisecond

// DefaultBatchWindow is how long the hub gathers changes before it sends
// them as one delta. Under churn (a thousand agents reconnecting after a
// coordinator restart) every agent gets a few deltas a second instead of one
// per change; a lone change waits at most this long.
const DefaultBatchWindow = 50 * time.Millisecond

// DefaultRestartGrace is how long nodes that were online when the
// coordinator stopped are left online without a stream: longer than an
// agent's reconnect backoff (30 s at most).
const DefaultRestartGrace = 45 * time.Second

// Repeated log lines members can trigger: at most logBurst of each message
// per logInterval (as the server's own limiter).
const (
	logBurst    = 20
	logInterval = time.Minute
)

// Config is what a hub is made from. Store is required; the rest may be
// left zero.
type Config struct {
	// Store is where the hub loads its nodes and policy from and writes
	// online states and netmap versions to.
	Store Store
	// Replicas, when other coordinators share the store, is the store's
	// view of them; nil for a coordinator of its own.
	Replicas ReplicaStore
	Log      *slog.Logger
	// Metrics are counted into when not nil.
	Metrics *Metrics
	// BatchWindow is DefaultBatchWindow if zero.
	BatchWindow time.Duration
	// RestartGrace is DefaultRestartGrace if zero.
	RestartGrace time.Duration

	// With replicas: Forward hands a signal for a node online on another
	// replica to the replicas' channel (false if it could not be queued);
	// Gone takes a node out of the mesh when the store says another
	// replica removed or expired it (Remove if nil); Seen hears of node
	// changes taken from the store. Gone and Seen are called without the
	// hub's lock; Forward with it, so it must only queue.
	Forward func(from, to uint64, frame []byte) bool
	Gone    func(id uint64, reason string)
	Seen    func(RemoteSeen)
}

// Hub is the live view of the mesh: every node, and the stream of each
// connected one.
//
// Locking: mu guards everything below it. Every exported method takes it
// itself and returns without it, so callers never hold the hub's lock. The
// store and Config's Gone and Seen are called without mu; Config.Forward
// and a Stream's close function are called with mu held, so they must
// only queue, never wait.
//
// Costs, with N nodes: a change records the node's ID and re-encodes that
// one node (O(1)); once per batch window the changed nodes are encoded into
// one delta frame shared by every stream, so each agent costs one queue push
// per batch whatever the number of changes. A newly connected agent's netmap
// is written from spans of a cached encoding of all nodes (peerBlob, see
// netmap.go), patched with the few nodes changed since it was built; the
// blob is rebuilt once per 64 changes at most. Nothing rebuilds the whole
// map per change.
//
// Ordering: frames are queued under mu, so every agent sees its netmap
// before any delta, and deltas in the order of flushes. A delta carries the
// state of each node at flush time, so applying it is idempotent, which is
// what lets a netmap taken between a change and its flush stay correct.
//
// The server process is the only writer of nodes while it runs, so the
// in-memory map stays equal to the store's members: admin commands that
// change nodes go through the server's admin socket.
type Hub struct {
	log *slog.Logger
	// logLimit thins out lines members can make us repeat.
	logLimit *logsafe.Limiter
	store    Store
	replicas ReplicaStore
	metrics  *Metrics
	window   time.Duration
	// maxHold bounds how long a batch may be held back for slow writers.
	maxHold      time.Duration
	restartGrace time.Duration

	// backlog counts frames queued to streams and not yet written. The
	// flusher holds the next batch while most streams have not taken the
	// last one, so under churn batches grow instead of piling up frames.
	backlog atomic.Int64

	mu     sync.Mutex
	nodes  map[uint64]control.Node
	enc    map[uint64][]byte // JSON of each node in nodes, kept current
	ids    []uint64          // keys of nodes, sorted: the netmap's order
	online int               // nodes with Online set
	conns  map[uint64]*Stream
	closed bool
	// peers caches the encoded peer list netmaps are cut from.
	peers peerBlob
	// hubPolicy holds the access policy, if one is set (policy.go).
	hubPolicy

	// Netmap versions (see netmapversion.go): the epoch and the SEQ of the
	// last batch, the batches kept for resumes, and the membership digest
	// (XOR of memberHash over nodes).
	epoch   string
	seq     uint64
	ring    []Batch
	ringIDs int
	digest  uint64
	// lastReturn is when a node online without a stream (restored after
	// a restart, or held by another replica) last attached.
	lastReturn time.Time

	// pending holds the nodes changed (or removed) since the last flush;
	// dirty the online state and last-seen times to write to the store.
	pending map[uint64]struct{}
	dirty   map[uint64]Seen
	// kick wakes the flusher; stop ends it, done says it ended.
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// gone, forward and seen are Config's (see there).
	gone    func(id uint64, reason string)
	forward func(from, to uint64, frame []byte) bool
	seen    func(RemoteSeen)
}

// New loads the nodes and the policy from the store, restores the netmap
// version agents may hold, and starts the flusher. Shutdown stops it.
func New(ctx context.Context, cfg Config) (*Hub, error) {
	nodes, err := cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("load nodes: %w", err)
	}
	h := &Hub{
		log:          cmp.Or(cfg.Log, slog.New(slog.DiscardHandler)),
		logLimit:     logsafe.NewLimiter(logBurst, logInterval),
		store:        cfg.Store,
		replicas:     cfg.Replicas,
		metrics:      cmp.Or(cfg.Metrics, NewMetrics(nil)),
		window:       cmp.Or(cfg.BatchWindow, DefaultBatchWindow),
		maxHold:      defaultMaxHold,
		restartGrace: cmp.Or(cfg.RestartGrace, DefaultRestartGrace),
		nodes:        make(map[uint64]control.Node, len(nodes)),
		enc:          make(map[uint64][]byte, len(nodes)),
		ids:          make([]uint64, 0, len(nodes)),
		conns:        map[uint64]*Stream{},
		pending:      map[uint64]struct{}{},
		dirty:        map[uint64]Seen{},
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		gone:         cfg.Gone,
		forward:      cfg.Forward,
		seen:         cfg.Seen,
	}
	if h.gone == nil {
		h.gone = func(id uint64, reason string) { h.Remove(id, reason) }
	}
	for _, n := range nodes {
		if err := h.setLocked(n); err != nil {
			return nil, err
		}
	}
	if err := h.loadPolicy(ctx); err != nil {
		return nil, err
	}
	// After the policy: the membership digest covers it (setPolicyLocked).
	if err := h.restoreVersion(ctx); err != nil {
		return nil, err
	}
	go h.flusher()
	return h, nil
}

// setLocked stores n and its encoding. It does not schedule a delta.
func (h *Hub) setLocked(n control.Node) error {
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node %d: %w", n.ID, err)
	}
	old, existed := h.nodes[n.ID]
	if !existed {
		i, _ := slices.BinarySearch(h.ids, n.ID)
		h.ids = slices.Insert(h.ids, i, n.ID)
	}
	if existed && old.Online {
		h.online--
	}
	if existed {
		h.digest ^= memberHash(old)
	}
	h.digest ^= memberHash(n)
	if n.Online {
		h.online++
	}
	h.nodes[n.ID] = n
	h.enc[n.ID] = b
	h.peers.changed(n.ID)
	h.placeLocked(n)
	return nil
}

// changedLocked stores n and schedules it for the next delta.
func (h *Hub) changedLocked(n control.Node) {
	if err := h.setLocked(n); err != nil {
		h.log.Warn("node change not sent", "err", err)
		return
	}
	h.pending[n.ID] = struct{}{}
	h.wakeLocked()
}

func (h *Hub) wakeLocked() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Upsert records a node that registered or changed and tells the others.
// Online and LastSeen belong to the hub (they follow streams), so they are
// kept from the hub's copy.
func (h *Hub) Upsert(n control.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.nodes[n.ID]; ok {
		n.Online, n.LastSeen, n.SeenFrom = old.Online, old.LastSeen, old.SeenFrom
		if sameNode(old, n) {
			return // a re-registration that changed nothing peers see
		}
	}
	h.changedLocked(n)
}

// Remove forgets a node that was deleted from the store: its stream, if
// any, is closed with reason, and every peer is told to drop it in the next
// delta. It reports whether the node was known.
func (h *Hub) Remove(id uint64, reason string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.nodes[id]
	if !ok {
		return false
	}
	if c := h.conns[id]; c != nil {
		delete(h.conns, id)
		c.dropped = true
		c.close(reason, true)
	}
	if n.Online {
		h.online--
	}
	h.digest ^= memberHash(n)
	delete(h.nodes, id)
	delete(h.enc, id)
	h.peers.changed(id)
	h.unplaceLocked(id)
	delete(h.dirty, id)
	if i, found := slices.BinarySearch(h.ids, id); found {
		h.ids = slices.Delete(h.ids, i, i+1)
	}
	h.pending[id] = struct{}{}
	h.wakeLocked()
	return true
}

// Attach connects a stream: the node goes online, the stream gets the full
// netmap as its first frame (Stream.Netmap), and the others learn of it in
// the next delta. A previous stream of the same node is closed, since an
// agent holds one stream at a time. version is the negotiated protocol
// version; since the netmap version the agent holds ("" for none), to
// which it is brought up to date with a resume when the hub can tell what
// changed; servers carries the netmap's server fields (STUN, ...), Attach
// fills in Self and Peers. With replicas, ctx bounds the store read for an
// agent that holds another replica's version (replica_resume.go).
func (h *Hub) Attach(ctx context.Context, c *Stream, version int, since string, servers control.Netmap) error {
	var foreign *foreignVersion
	if h.replicas != nil && since != "" {
		// Perhaps an agent that moved from another replica.
		foreign = h.foreignResume(ctx, since)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	self, ok := h.nodes[c.node]
	if !ok {
		return fmt.Errorf("node %d not known", c.node)
	}
	c.version = version
	wasOnline, wasFrom := self.Online, self.SeenFrom
	if old := h.conns[c.node]; old != nil {
		h.logLimit.LogFor(strconv.FormatUint(c.node, 10), h.log, slog.LevelInfo, "replacing stream", "node", c.node)
		old.dropped = true
		old.close("replaced by a newer stream", true)
	} else if wasOnline {
		h.lastReturn = time.Now() // see sweepRestored
		if h.replicas != nil {
			// Perhaps a move from another replica: write our claim on
			// the node within a batch window, not at the next touch
			// tick, so that the replica it left, writing it offline as
			// its old stream ends, finds it taken (flush's stale).
			h.wakeLocked()
		}
	}
	self.Online, self.LastSeen, self.SeenFrom = true, time.Now().UTC(), c.from
	if wasOnline && (wasFrom == self.SeenFrom || wasFrom == "") {
		// Already online as peers see it (a replaced stream, or a node
		// back after a coordinator restart): a fresh last-seen time alone
		// is not worth a delta to every agent. After a restart the SQLite
		// store does not know where the stream came from (wasFrom ""):
		// peers keep the address they had, as for most agents it is the
		// same; without this every reconnect would be a delta and a
		// restart storm would resume no one (10,000 agents: half got full
		// netmaps, 51 s).
		if err := h.setLocked(self); err != nil {
			return err
		}
	} else {
		h.changedLocked(self)
	}
	h.dirty[self.ID] = Seen{Online: true, LastSeen: self.LastSeen, From: self.SeenFrom}

	frame, err := h.resumeFrameLocked(self, version, servers, since, foreign)
	if err != nil {
		return err
	}
	if frame == nil {
		frame, err = h.netmapFrameLocked(self, version, servers)
		if err != nil {
			return err
		}
		h.metrics.Netmaps.Inc()
		h.metrics.NetmapBytes.Set(float64(frame.size))
	}
	h.conns[c.node] = c
	// The netmap goes ahead of the queue (see Stream.netmap), so a
	// 10,000-node netmap does not count against the queue bound.
	c.netmap = frame
	return nil
}

// Detach takes off a stream that ended and reports whether the node went
// offline. If a newer stream of the node already replaced it, the node stays
// online.
func (h *Hub) Detach(c *Stream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	// The stream's writer has stopped: what it left queued is not backlog.
	c.dropped = true
	h.backlog.Add(-int64(len(c.send)))
	if h.conns[c.node] != c {
		return false
	}
	delete(h.conns, c.node)
	n, ok := h.nodes[c.node]
	if !ok || h.closed {
		// Shutting down: the node stays online as its peers last saw it
		// (see CloseAll).
		return false
	}
	n.Online, n.LastSeen = false, time.Now().UTC()
	h.changedLocked(n)
	h.dirty[n.ID] = Seen{Online: false, LastSeen: n.LastSeen}
	return true
}

// Touch records that a node's stream is alive. Peers are not told: a
// last-seen tick is not worth a delta to every agent. The store learns of it
// with the next batch or within touchFlushInterval, in one transaction.
func (h *Hub) Touch(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.dirty[id]; ok {
		return // an online change is queued and carries a fresher time
	}
	// No wake-up: the flusher writes touches with the next batch or on its
	// touch tick, so 10,000 pinged streams do not mean 20 writes a second.
	h.dirty[id] = Seen{LastSeen: time.Now().UTC(), Touch: true}
}

// Signal forwards a signal from a member to its target's stream (or the
// replica holding it). From is always the sender, whatever the sender
// claimed; the pair must be peers. Signals are not batched: ICE needs
// them now, and only one agent receives each.
func (h *Hub) Signal(from uint64, sig control.Signal) {
	sig.From = from
	if sig.To == 0 || sig.To == from {
		h.log.Debug("dropping signal with bad target", "from", from, "to", sig.To)
		h.metrics.Signals.With("dropped").Inc()
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
		h.logLimit.Log(h.log, slog.LevelInfo, "dropping signal between nodes that are not peers", "from", from, "to", sig.To, "kind", logsafe.Clip(sig.Kind))
		h.metrics.Signals.With("dropped").Inc()
		return
	}
	c := h.conns[sig.To]
	if c == nil && h.forward != nil && h.nodes[sig.To].Online {
		// Online on another replica.
		if h.forward(from, sig.To, frame) {
			h.metrics.Signals.With("forwarded_replica").Inc()
		} else {
			h.metrics.Signals.With("queue_full").Inc()
		}
		return
	}
	if c == nil {
		h.log.Debug("dropping signal for offline node", "from", from, "to", sig.To, "kind", logsafe.Clip(sig.Kind))
		h.metrics.Signals.With("dropped").Inc()
		return
	}
	if !h.enqueueSignalLocked(c, frame) {
		h.metrics.Signals.With("queue_full").Inc()
		h.logLimit.Log(h.log, slog.LevelInfo, "dropping signal: receiver's queue is busy", "from", from, "to", sig.To)
		return
	}
	h.metrics.Signals.With("forwarded").Inc()
}

// signalQueueShare is how much of a stream's send queue signals may fill.
// The rest is kept for netmap deltas, whose loss would close the stream:
// signals flooding a receiver are dropped instead (ICE retries), never the
// receiver's stream.
const signalQueueShare = QueueLen / 2

// enqueueSignalLocked queues a signal frame unless the receiver's queue is
// over its signal share; it reports whether it did.
func (h *Hub) enqueueSignalLocked(c *Stream, frame []byte) bool {
	if c.dropped || len(c.send) >= signalQueueShare {
		return false
	}
	h.enqueueLocked(c, frame)
	return true
}

// CloseAll ends every stream and refuses new ones. Streams that end from
// then on leave their nodes online as their peers last saw them, so a
// coordinator started again on the store resumes its agents.
func (h *Hub) CloseAll(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, c := range h.conns {
		c.close(reason, true)
	}
}

// Shutdown stops the flusher after a last flush, so every state change that
// happened reaches the store before it is closed. Safe to call twice.
func (h *Hub) Shutdown() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

// enqueueLocked queues a frame without blocking. An agent too slow to drain
// its queue is disconnected rather than allowed to stall the hub; it
// reconnects and starts over from a full netmap.
func (h *Hub) enqueueLocked(c *Stream, frame []byte) {
	if c.dropped {
		return
	}
	select {
	case c.send <- frame:
		h.backlog.Add(1)
	default:
		h.log.Warn("stream send queue full, closing", "node", c.node)
		h.metrics.StreamsDropped.Inc()
		c.dropped = true
		c.close("send queue overflow", false)
	}
}

// Counts is a snapshot of the hub's size, for metrics.
type Counts struct {
	Nodes, Online, Streams int
	// Pending is how many node changes wait for the next batch.
	Pending int
}

// Counts reports the hub's size.
func (h *Hub) Counts() Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Counts{Nodes: len(h.nodes), Online: h.online, Streams: len(h.conns), Pending: len(h.pending)}
}

// NetmapVersion is the netmap version of the last batch sent, as agents
// are told it (see netmapversion.go).
func (h *Hub) NetmapVersion() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.versionLocked()
}

package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// Netmap versions let a reconnecting agent get only what changed since the
// netmap it holds (control.MsgResume) instead of the whole netmap: 1.7 MB at
// 10,000 nodes, times every agent of a coordinator that restarts.
//
// A version is "EPOCH.SEQ". SEQ counts the delta batches the hub sent;
// EPOCH names the series. The hub keeps the nodes of its last batches in a
// ring (deltaRing), so an agent whose SEQ is still covered gets their
// current state. The epoch and SEQ are stored with the online flags of each
// batch (in one transaction), together with a digest of the membership
// (who, with which name, address, key and tags), and the batch's nodes
// with the others the ring holds (netmap_batches). A restarted coordinator
// whose store still has that digest knows that an agent holding the stored
// version is current, keeps the epoch and rebuilds the ring, so an agent a
// few batches behind (its last frames were still queued when the
// coordinator died, or its stream had just dropped) is resumed too:
// without the ring, a restart at 10,000 agents sent 1,368 of them a full
// 2 MB netmap. Anything else (a registration that reached the store but
// not the agents, a store from elsewhere) starts a new epoch, and every
// agent gets a full netmap.

// restartWaitMax bounds, in restart graces, how long the nodes restored
// online wait for their agents while others are still coming back (see
// sweepRestored).
const restartWaitMax = 6

const (
	// ringBatches bounds the batches remembered for resumes. A member
	// going offline and online in a loop makes a batch per batch window (up
	// to 20 a second): at 256 batches it aged the ring in 13 s, and every
	// agent away longer got a full netmap. 4,096 small batches keep 3.4 min
	// of that; ringNodes still bounds the memory and the stored rows.
	ringBatches = 4096
	// ringNodes bounds the node IDs they hold in all.
	ringNodes = 8192
)

// batchVersionLocked is the version to store with the next batch, naming
// ids: the SEQ it will have, and the oldest batch the ring will still hold
// once it is recorded (recordBatchLocked's bounds).
func (h *Hub) batchVersionLocked(ids []uint64) *Version {
	v := &Version{Epoch: h.epoch, Seq: h.seq + 1, Digest: h.digest, Batch: ids, KeepFrom: h.seq + 1}
	n, total := 1, len(ids)
	for i := len(h.ring) - 1; i >= 0; i-- {
		b := h.ring[i]
		if n+1 > ringBatches || total+len(b.IDs) > ringNodes {
			break
		}
		n, total, v.KeepFrom = n+1, total+len(b.IDs), b.Seq
	}
	return v
}

func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// memberHash is one node's share of the membership digest. Online and
// LastSeen are left out: they follow streams and are resent as agents
// reconnect.
func memberHash(n control.Node) uint64 {
	h := sha256.New()
	h.Write([]byte(strconv.FormatUint(n.ID, 10) + "\x00" + n.Name + "\x00" + n.IP + "\x00" + n.PublicKey + "\x00" + strings.Join(n.Tags, "\x01")))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// versionLocked is the current version as sent to agents.
func (h *Hub) versionLocked() string {
	return h.epoch + "." + strconv.FormatUint(h.seq, 10)
}

// recordBatchLocked starts the next SEQ for a batch naming ids.
func (h *Hub) recordBatchLocked(ids []uint64) {
	h.seq++
	h.appendRingLocked(Batch{Seq: h.seq, IDs: ids})
}

// appendRingLocked adds b to the ring and drops the oldest batches beyond
// its bounds.
func (h *Hub) appendRingLocked(b Batch) {
	h.ring = append(h.ring, b)
	h.ringIDs += len(b.IDs)
	for len(h.ring) > ringBatches || (h.ringIDs > ringNodes && len(h.ring) > 1) {
		h.ringIDs -= len(h.ring[0].IDs)
		h.ring[0] = Batch{}
		h.ring = h.ring[1:]
	}
}

// sinceLocked returns the nodes changed after version since, sorted, and
// whether the hub can tell: since is of this epoch and the ring still holds
// every batch after it.
func (h *Hub) sinceLocked(since string) ([]uint64, bool) {
	epoch, s, ok := strings.Cut(since, ".")
	if !ok || epoch != h.epoch {
		return nil, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq > h.seq {
		return nil, false
	}
	if seq == h.seq {
		return nil, true
	}
	// The batches after seq must all be in the ring: the oldest kept is at
	// most seq+1.
	if len(h.ring) == 0 || h.ring[0].Seq > seq+1 {
		return nil, false
	}
	set := map[uint64]struct{}{}
	for _, b := range h.ring {
		if b.Seq > seq {
			for _, id := range b.IDs {
				set[id] = struct{}{}
			}
		}
	}
	ids := make([]uint64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, true
}

// missReasonLocked says why sinceLocked could not bring since up to date,
// for the resume-misses metric: a foreign version (another replica's or
// none the store knows), one of this epoch ahead of the hub, or one older
// than the ring holds.
func (h *Hub) missReasonLocked(since string, foreign *foreignVersion) string {
	epoch, s, _ := strings.Cut(since, ".")
	seq, err := strconv.ParseUint(s, 10, 64)
	switch {
	case foreign != nil:
		return "foreign"
	case epoch != h.epoch || err != nil:
		return "epoch"
	case seq > h.seq:
		return "ahead"
	default:
		return "ring"
	}
}

// restoreVersion takes the stored epoch and SEQ when the loaded nodes are
// the membership they were stored with, else starts a new epoch. Nodes the
// store says are online stay so for restartGrace, so agents that come back
// at once cause no online delta to everyone (see sweepRestored).
func (h *Hub) restoreVersion(ctx context.Context) error {
	if h.replicas != nil {
		return h.restoreReplicaVersion(ctx)
	}
	v, ok, err := h.store.NetmapVersion(ctx)
	if err != nil {
		return err
	}
	if ok && v.Digest == h.digest && v.Epoch != "" {
		h.epoch, h.seq = v.Epoch, v.Seq
		if err := h.restoreRing(ctx); err != nil {
			return err
		}
	} else {
		h.epoch, h.seq = newEpoch(), 0
	}
	var restored []uint64
	for _, id := range h.ids {
		if h.nodes[id].Online {
			restored = append(restored, id)
		}
	}
	if len(restored) > 0 {
		h.sweepRestoredAfter(restored)
	}
	return nil
}

// restoreRing rebuilds the ring from the stored batches of the restored
// epoch: the unbroken run of SEQs that ends at the restored SEQ (a batch
// whose store write failed leaves a gap, and nothing before it can be
// vouched for).
func (h *Hub) restoreRing(ctx context.Context) error {
	batches, err := h.store.LoadBatches(ctx, h.epoch, h.seq)
	if err != nil {
		return err
	}
	h.ring, h.ringIDs = nil, 0
	for _, b := range unbroken(batches, h.seq) {
		h.appendRingLocked(b)
	}
	return nil
}

// unbroken is the run of batches (sorted by SEQ) whose SEQs follow each
// other up to upTo.
func unbroken(batches []Batch, upTo uint64) []Batch {
	first := len(batches)
	for want := upTo; first > 0 && batches[first-1].Seq == want; want-- {
		first--
	}
	return batches[first:]
}

// sweepRestoredAfter schedules sweepRestored of ids after the restart
// grace.
func (h *Hub) sweepRestoredAfter(ids []uint64) {
	start := time.Now()
	time.AfterFunc(h.restartGrace, func() { h.sweepRestored(ids, start) })
}

// sweepRestored marks offline the nodes restored as online that did not
// come back. While they are still coming back (one did within a third of
// the grace) it waits, up to restartWaitMax graces from start: a storm of
// full netmaps outlasts the grace (10,000 agents: 51-107 s), and marking
// the agents still on their way offline, then online again as they
// arrive, sent everyone two batches of thousands of nodes and filled the
// ring, so the next storm's resumes missed. Only returns count (a node
// online without a stream that attaches), so one member reconnecting in a
// loop puts nothing off; the bound is for replicas, where agents moving
// from another replica count too.
func (h *Hub) sweepRestored(ids []uint64, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	quiet := h.restartGrace / 3
	if since := time.Since(h.lastReturn); since < quiet && time.Since(start) < restartWaitMax*h.restartGrace {
		time.AfterFunc(quiet-since, func() { h.sweepRestored(ids, start) })
		return
	}
	for _, id := range ids {
		n, ok := h.nodes[id]
		if !ok || !n.Online || h.conns[id] != nil {
			continue
		}
		n.Online = false
		h.changedLocked(n)
		h.dirty[id] = Seen{Online: false, LastSeen: n.LastSeen}
	}
}

// resumeFrameLocked answers an agent that holds version since with what
// changed after it (control.MsgResume), or returns nil when a full netmap
// is needed: no version, one the hub cannot bring up to date, or so many
// changes that the netmap is as small. Under an access policy every node
// sees its own part of the mesh and has its own filter, which the ring of
// mesh-wide changes cannot tell: such agents always get a full (trimmed)
// netmap.
func (h *Hub) resumeFrameLocked(self control.Node, version int, servers control.Netmap, since string, foreign *foreignVersion) (*NetmapFrame, error) {
	if since == "" || version < 2 || h.pol != nil {
		return nil, nil
	}
	ids, ok := h.sinceLocked(since)
	if !ok && foreign != nil {
		ids, ok = h.foreignSinceLocked(foreign)
	}
	if !ok {
		h.metrics.ResumeMisses.With(h.missReasonLocked(since, foreign)).Inc()
		return nil, nil
	}
	if len(ids) > len(h.ids)/2 {
		h.metrics.ResumeMisses.With("too_many").Inc()
		return nil, nil
	}
	selfJSON, err := json.Marshal(self)
	if err != nil {
		return nil, fmt.Errorf("encode resume: %w", err)
	}
	if servers.STUN == nil {
		servers.STUN = []string{}
	}
	rest, err := serverFields(servers)
	if err != nil {
		return nil, fmt.Errorf("encode resume: %w", err)
	}
	b := h.deltaBodyLocked(`{"type":"resume","v":`+strconv.Itoa(version)+`,"nv":"`+h.versionLocked()+
		`","netmap":{"self":`+string(selfJSON)+`,"peers":[]`+rest+`},"delta":`, ids, self.ID)
	b.WriteString(`}`)
	h.metrics.Resumes.Inc()
	f := &NetmapFrame{}
	f.add(b.Bytes())
	return f, nil
}

// restoreReplicaVersion is restoreVersion for a replica. Each replica keeps
// its own version (its row in the store, under its ID from the state
// directory), so an agent that moved from another replica holds a foreign
// epoch and gets a full netmap. Its own agents may resume after a restart
// if the membership is still the one stored; what other replicas changed
// meanwhile is only online states, which the store dates (changed_at, on
// the database's clock): the nodes changed since the version was saved
// make up one batch after it, so a resumed agent gets their current state.
// The nodes online through this replica's streams when it stopped stay
// online for restartGrace, as with one coordinator; the others belong to
// live replicas (or are swept when theirs stops, replica.go).
func (h *Hub) restoreReplicaVersion(ctx context.Context) error {
	v, ok, err := h.store.NetmapVersion(ctx)
	if err != nil {
		return err
	}
	// Where online nodes' streams come from, as peers were told: an agent
	// reconnecting from the same address then changes nothing they see.
	from, err := h.replicas.SeenFrom(ctx)
	if err != nil {
		return err
	}
	for id, addr := range from {
		if n, ok := h.nodes[id]; ok && n.Online {
			n.SeenFrom = addr
			if err := h.setLocked(n); err != nil {
				return err
			}
		}
	}
	h.epoch, h.seq = newEpoch(), 0
	if ok && v.Digest == h.digest && v.Epoch != "" {
		ids, err := h.replicas.ChangedSince(ctx, v.SavedAt-changedMargin.Milliseconds())
		if err != nil {
			return err
		}
		if len(ids) <= ringNodes {
			h.epoch, h.seq = v.Epoch, v.Seq
			if err := h.restoreRing(ctx); err != nil {
				return err
			}
			if len(ids) > 0 {
				h.recordBatchLocked(ids)
			}
		}
	}
	held, err := h.replicas.Held(ctx)
	if err != nil {
		return err
	}
	if len(held) > 0 {
		h.sweepRestoredAfter(held)
	}
	return nil
}

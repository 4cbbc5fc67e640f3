package hub

import (
	"context"
	"fmt"
	"slices"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/policy"
)

// The hub's side of replicas (the coordinator's replica.go): other
// coordinators change the store, and this hub takes the store's word for
// the nodes they name (ReplicaStore). A
// node whose stream this replica holds stays online as seen here, and so
// does one whose online change is still to be written: both are newer than
// the row.

// Reload brings the nodes ids to their state in the store: changed ones
// go to the next delta, deleted or expired ones leave the mesh. This and
// the other calls here are for replicas (Config.Replicas set).
func (h *Hub) Reload(ctx context.Context, ids []uint64) error {
	rows, err := h.replicas.NodesByID(ctx, ids)
	if err != nil {
		return err
	}
	h.applyStored(rows, ids)
	return nil
}

// ReloadAll brings every node to its state in the store, for a replica
// that may have missed notifications (its listener reconnected).
func (h *Hub) ReloadAll(ctx context.Context) error {
	rows, err := h.replicas.AllNodes(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	asked := slices.Clone(h.ids)
	h.mu.Unlock()
	for _, r := range rows {
		asked = append(asked, r.ID)
	}
	slices.Sort(asked)
	h.applyStored(rows, slices.Compact(asked))
	return nil
}

// applyStored applies rows, the store's state of the nodes asked (sorted);
// an asked node without a row was removed.
func (h *Hub) applyStored(rows []StoredNode, asked []uint64) {
	type leaving struct {
		id     uint64
		reason string
	}
	var gone []leaving
	var seen []RemoteSeen
	h.mu.Lock()
	byID := make(map[uint64]StoredNode, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	for _, id := range asked {
		r, ok := byID[id]
		old, known := h.nodes[id]
		switch {
		case !ok && known:
			gone = append(gone, leaving{id, control.ReasonNodeRemoved})
			continue
		case !ok:
			continue
		case r.Expired && known:
			gone = append(gone, leaving{id, control.ReasonNodeExpired})
			continue
		case r.Expired:
			continue
		}
		n := r.Node
		if d, pending := h.dirty[id]; known && (h.conns[id] != nil || (pending && !d.Touch)) {
			n.Online, n.LastSeen, n.SeenFrom = old.Online, old.LastSeen, old.SeenFrom
		}
		if !n.Online {
			n.SeenFrom = ""
		}
		if known && n.Online && old.Online {
			// A last-seen tick of a node online elsewhere is not worth a
			// delta (a reload after a lost connection finds every one).
			n.LastSeen = old.LastSeen
		}
		if known && sameNode(old, n) {
			continue
		}
		h.changedLocked(n)
		seen = append(seen, RemoteSeen{ID: id, Ephemeral: r.Ephemeral, Known: known, Online: n.Online, WasOnline: old.Online})
	}
	h.mu.Unlock()
	for _, g := range gone {
		h.gone(g.id, g.reason)
	}
	if h.seen != nil {
		for _, s := range seen {
			h.seen(s)
		}
	}
}

// ReloadPolicy installs the stored policy if another replica changed it.
func (h *Hub) ReloadPolicy(ctx context.Context) error {
	src, err := h.store.Policy(ctx)
	if err != nil {
		return err
	}
	var c *policy.Compiled
	if src != nil {
		pol, err := policy.Parse(src)
		if err != nil {
			return fmt.Errorf("stored policy: %w", err)
		}
		c = policy.Compile(pol)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if policyHash(src) == h.srcHash {
		return nil
	}
	h.setPolicyLocked(c, src)
	return nil
}

// Deliver queues a signal frame another replica forwarded to node to, if
// this replica holds its stream. The sending replica checked the
// sender; the pair is checked again against this replica's view.
func (h *Hub) Deliver(from, to uint64, frame []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.conns[to]
	if c == nil {
		return false
	}
	if !h.peersLocked(from, to) {
		h.metrics.Signals.With("dropped").Inc()
		return false
	}
	if !h.enqueueSignalLocked(c, frame) {
		h.metrics.Signals.With("queue_full").Inc()
		return false
	}
	h.metrics.Signals.With("forwarded").Inc()
	return true
}

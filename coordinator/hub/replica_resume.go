package hub

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
)

// An agent that moves from a replica that died holds that replica's
// version. Each replica stores its version (epoch, SEQ, membership digest)
// with the database time of the batch, and the store dates every online
// change (changed_at). So when the agent holds the dead replica's last
// stored version and the membership is still the one stored with it, the
// only changes it can have missed are online states changed since then,
// plus what this replica sent after it looked: a resume, not a full netmap
// each for thousands of agents failing over at once. An agent a few
// batches behind that version also gets the nodes of the batches it
// missed, from the dead replica's stored ones (netmap_batches).

// changedMargin widens "changed since the version was saved": a replica's
// view of others' changes lags the store by the notification's trip, and
// one committed just before the version may carry a later time.
const changedMargin = 5 * time.Second

// foreignVersion is what the store says about another replica's version
// an agent holds.
type foreignVersion struct {
	// digest is the membership digest stored with it.
	digest uint64
	// changed are the nodes whose online state changed since it was saved.
	changed []uint64
	// mark is this hub's version when they were read: what it sent after
	// that comes from its ring.
	mark string
}

// foreignResume looks up since when it is another replica's version and
// that replica's last stored one; nil otherwise (a full netmap follows).
// It reads the store, so it runs before the hub's lock is taken.
func (h *Hub) foreignResume(ctx context.Context, since string) *foreignVersion {
	epoch, s, ok := strings.Cut(since, ".")
	seq, err := strconv.ParseUint(s, 10, 64)
	if !ok || err != nil || h.replicas == nil {
		return nil
	}
	h.mu.Lock()
	mark, own := h.versionLocked(), epoch == h.epoch
	h.mu.Unlock()
	if own {
		return nil
	}
	v, ok, err := h.replicas.VersionByEpoch(ctx, epoch)
	if err != nil || !ok || seq > v.Seq {
		return nil
	}
	changed, err := h.replicas.ChangedSince(ctx, v.SavedAt-changedMargin.Milliseconds())
	if err != nil {
		return nil
	}
	if seq < v.Seq {
		// Behind the dead replica's last version: the nodes of the
		// batches it sent after seq, if its stored ones still reach back.
		batches, err := h.store.LoadBatches(ctx, epoch, v.Seq)
		if err != nil {
			return nil
		}
		batches = unbroken(batches, v.Seq)
		if len(batches) == 0 || batches[0].Seq > seq+1 {
			return nil
		}
		for _, b := range batches {
			if b.Seq > seq {
				changed = append(changed, b.IDs...)
			}
		}
	}
	return &foreignVersion{digest: v.Digest, changed: changed, mark: mark}
}

// foreignSinceLocked is sinceLocked for a foreign version: the nodes to
// send, if the membership is still the one stored with it and the ring
// still covers what this hub sent since f was read.
func (h *Hub) foreignSinceLocked(f *foreignVersion) ([]uint64, bool) {
	if f.digest != h.digest {
		return nil, false
	}
	later, ok := h.sinceLocked(f.mark)
	if !ok {
		return nil, false
	}
	ids := append(slices.Clone(f.changed), later...)
	slices.Sort(ids)
	return slices.Compact(ids), true
}

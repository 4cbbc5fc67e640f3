package hub

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strconv"
	"time"
)

// touchFlushInterval is how often last-seen times from stream pings are
// written when nothing else is.
const touchFlushInterval = 5 * time.Second

// dbTimeout bounds one batch write to the store.
const dbTimeout = 10 * time.Second

// flusher sends the changes gathered during each batch window as one delta
// per agent. The first change after a quiet spell starts a window; changes
// during it ride along. One goroutine, so store writes keep their order.
func (h *Hub) flusher() {
	defer close(h.done)
	touches := time.NewTicker(touchFlushInterval)
	defer touches.Stop()
	for {
		select {
		case <-h.kick:
		case <-touches.C:
			h.flush() // last-seen times only, unless a change is pending
			continue
		case <-h.stop:
			h.flush()
			return
		}
		t := time.NewTimer(h.window)
		select {
		case <-t.C:
		case <-h.stop:
			t.Stop()
			h.flush()
			return
		}
		h.holdForWriters()
		h.flush()
	}
}

// holdForWriters waits, up to maxHold, while the streams as a whole are
// behind: more frames queued than half the streams plus one full queue
// (a single stuck agent must not hold everyone up). Writing a batch to
// 10,000 streams takes a while on a small machine; sending the next one
// before that is done only grows every queue.
func (h *Hub) holdForWriters() {
	deadline := time.Now().Add(h.maxHold)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		limit := int64(len(h.conns)/2 + QueueLen)
		h.mu.Unlock()
		if h.backlog.Load() <= limit {
			return
		}
		select {
		case <-h.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Written is called by a stream's writer for each frame it took from its
// queue.
func (h *Hub) Written() { h.backlog.Add(-1) }

// flush writes online state and last-seen times to the store, then sends
// the node changes pending when it started. The store goes first so that an
// agent told "peer offline" finds the same in the store.
func (h *Hub) flush() {
	h.mu.Lock()
	var dirty map[uint64]Seen
	if len(h.dirty) > 0 {
		dirty, h.dirty = h.dirty, map[uint64]Seen{}
	}
	ids := slices.Sorted(maps.Keys(h.pending))
	clear(h.pending)
	// The batch's version is stored with its online flags, so a restarted
	// coordinator knows what the agents hold (see netmapversion.go).
	var version *Version
	if len(ids) > 0 {
		version = h.batchVersionLocked(ids)
	}
	h.mu.Unlock()
	var stale []uint64
	if len(dirty) > 0 || version != nil {
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		var err error
		if stale, err = h.store.SaveSeen(ctx, dirty, version); err != nil {
			h.log.Warn("persist online state", "nodes", len(dirty), "err", err)
		}
		cancel()
	}
	if len(stale) > 0 {
		// Nodes another replica took while our stream of them ended: take
		// the store's word (online there) before the batch goes out, so
		// peers are not told they went offline (and online again in the
		// next batch) each time an agent moves.
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		if err := h.Reload(ctx, stale); err != nil {
			h.log.Warn("reload nodes held by another replica", "nodes", len(stale), "err", err)
		}
		cancel()
	}
	if len(ids) > 0 {
		h.mu.Lock()
		for _, id := range stale {
			if _, ok := slices.BinarySearch(ids, id); ok {
				delete(h.pending, id) // this batch carries the reloaded state
			}
		}
		h.sendLocked(ids)
		h.mu.Unlock()
	}
}

// sendLocked encodes the current state of the changed nodes ids (sorted)
// once and queues the frame to every stream. A node changed again since the
// flush began is sent with its newest state, and again in the next batch:
// deltas are idempotent.
//
// Protocol versions: from version 2 a delta may name the receiving node
// itself (its own change, e.g. a rename), which the agent applies to its
// self view. Version 1 agents were never sent their own node, so they get a
// copy of the frame without it; that costs one extra encoding per version 1
// agent whose own node is in the batch.
func (h *Hub) sendLocked(ids []uint64) {
	h.metrics.DeltaBatches.Inc()
	h.metrics.DeltaNodes.Add(float64(len(ids)))
	h.recordBatchLocked(ids)
	if len(h.conns) == 0 {
		return
	}
	if h.pol != nil {
		h.policySendLocked(ids)
		return
	}
	shared := h.deltaFrameLocked(ids, 0)
	for id, c := range h.conns {
		frame := shared
		if c.version < 2 {
			if _, mine := slices.BinarySearch(ids, id); mine {
				if len(ids) == 1 {
					continue
				}
				frame = h.deltaFrameLocked(ids, id)
			}
		}
		h.metrics.DeltaFrames.Inc()
		h.enqueueLocked(c, frame)
	}
}

// deltaFrameLocked encodes a delta with the current state of ids: known
// nodes as upserts, the others as removals. skip, if not 0, is left out.
func (h *Hub) deltaFrameLocked(ids []uint64, skip uint64) []byte {
	b := h.deltaBodyLocked(`{"type":"delta","nv":"`+h.versionLocked()+`","delta":`, ids, skip)
	b.WriteString(`}`)
	return b.Bytes()
}

// deltaBodyLocked writes prefix and the delta object of ids (see
// deltaFrameLocked) to a new buffer.
func (h *Hub) deltaBodyLocked(prefix string, ids []uint64, skip uint64) *bytes.Buffer {
	size := 64 + len(prefix)
	for _, id := range ids {
		size += len(h.enc[id]) + 21
	}
	b := bytes.NewBuffer(make([]byte, 0, size))
	b.WriteString(prefix)
	b.WriteString(`{`)
	n := 0
	for _, id := range ids {
		e, ok := h.enc[id]
		if !ok || id == skip {
			continue
		}
		if n == 0 {
			b.WriteString(`"upsert":[`)
		} else {
			b.WriteByte(',')
		}
		b.Write(e)
		n++
	}
	if n > 0 {
		b.WriteByte(']')
	}
	r := 0
	for _, id := range ids {
		if _, ok := h.enc[id]; ok || id == skip {
			continue
		}
		switch {
		case r == 0 && n > 0:
			b.WriteString(`,"remove":[`)
		case r == 0:
			b.WriteString(`"remove":[`)
		default:
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(id, 10))
		r++
	}
	if r > 0 {
		b.WriteByte(']')
	}
	b.WriteString(`}`)
	return b
}

// Flush writes and sends whatever is pending without waiting for the batch
// window; tests use it to make batching deterministic.
func (h *Hub) Flush() { h.flush() }

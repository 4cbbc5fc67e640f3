package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/meshvpn/meshvpn/control"
)

// peerBlob caches the encoded list of every node, so a netmap is a few
// large copies instead of N lookups and N small copies. Each entry is
// ",{node JSON}", in node ID order. Nodes changed since the blob was built
// are patched in from the hub's current encodings while copying; once too
// many have changed, the blob is rebuilt (at most once per maxStale
// changes, so its O(N) cost is spread thin under churn).
type peerBlob struct {
	blob  []byte
	ids   []uint64 // node of each entry
	offs  []int    // start of each entry in blob, plus len(blob) at the end
	stale map[uint64]struct{}
	valid bool
}

// maxStale is how many changed nodes a netmap patches before the blob is
// rebuilt.
const maxStale = 64

func (p *peerBlob) changed(id uint64) {
	if !p.valid {
		return
	}
	p.stale[id] = struct{}{}
	if len(p.stale) > maxStale {
		p.valid = false
	}
}

// rebuildLocked encodes the blob from the hub's nodes.
func (h *hub) rebuildPeersLocked() {
	p := &h.peers
	size := 0
	for _, id := range h.ids {
		size += len(h.enc[id]) + 1
	}
	blob := make([]byte, 0, size)
	p.ids = append(p.ids[:0], h.ids...)
	p.offs = p.offs[:0]
	for _, id := range h.ids {
		p.offs = append(p.offs, len(blob))
		blob = append(blob, ',')
		blob = append(blob, h.enc[id]...)
	}
	p.offs = append(p.offs, len(blob))
	p.blob = blob
	p.stale = map[uint64]struct{}{}
	p.valid = true
}

// netmapPool recycles netmap frames: at 10,000 nodes each is over a
// megabyte, and a reconnect storm would otherwise churn gigabytes through
// the garbage collector. A small fixed pool rather than a sync.Pool, which
// would keep one buffer per concurrent writer alive until the next GC.
var netmapPool = make(chan []byte, 4)

// releaseNetmap returns a written netmap frame to the pool.
func releaseNetmap(b []byte) {
	if cap(b) < 64<<10 {
		return
	}
	select {
	case netmapPool <- b[:0]:
	default:
	}
}

// netmapFrameLocked encodes self's full netmap.
func (h *hub) netmapFrameLocked(self control.Node, version int, stun []string) ([]byte, error) {
	if !h.peers.valid {
		h.rebuildPeersLocked()
	}
	p := &h.peers
	if stun == nil {
		stun = []string{}
	}
	selfJSON, err := json.Marshal(self)
	if err != nil {
		return nil, fmt.Errorf("encode netmap: %w", err)
	}
	stunJSON, err := json.Marshal(stun)
	if err != nil {
		return nil, fmt.Errorf("encode netmap: %w", err)
	}
	size := 128 + len(selfJSON) + len(stunJSON) + len(p.blob)
	for id := range p.stale {
		size += len(h.enc[id]) + 1
	}
	var buf []byte
	select {
	case buf = <-netmapPool:
	default:
	}
	if cap(buf) < size {
		buf = make([]byte, 0, size+size/8)
	}
	b := bytes.NewBuffer(buf[:0])
	b.WriteString(`{"type":"netmap","v":`)
	b.WriteString(strconv.Itoa(version))
	b.WriteString(`,"netmap":{"self":`)
	b.Write(selfJSON)
	b.WriteString(`,"peers":[`)
	start := b.Len()

	// Copy the blob in spans between the entries to patch: nodes changed
	// since it was built (current encoding, or nothing if removed) and
	// self (left out).
	patch := slices.Sorted(maps.Keys(p.stale))
	if i, found := slices.BinarySearch(patch, self.ID); !found {
		patch = slices.Insert(patch, i, self.ID)
	}
	cur := 0
	for _, id := range patch {
		i, found := slices.BinarySearch(p.ids, id)
		b.Write(p.blob[p.offs[cur]:p.offs[i]])
		cur = i
		if found {
			cur = i + 1
		}
		if id == self.ID {
			continue
		}
		if e, ok := h.enc[id]; ok {
			b.WriteByte(',')
			b.Write(e)
		}
	}
	b.Write(p.blob[p.offs[cur]:])
	out := b.Bytes()
	if len(out) > start {
		out[start] = ' ' // every entry starts with a comma; the first must not
	}
	b.WriteString(`],"stun":`)
	b.Write(stunJSON)
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

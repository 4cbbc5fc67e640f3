package hub

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
func (h *Hub) rebuildPeersLocked() {
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

// NetmapFrame is a netmap as the pieces it is written from: a few fresh
// bytes (header, self, STUN) around spans of the shared peer blob and the
// current encodings of patched nodes. None of them is ever modified once
// built (a rebuild makes a new blob, a change a new encoding), so the
// stream's writer can send them after the hub lock is released. At 10,000
// nodes this saves copying 1.7 MB per connecting agent, gigabytes of
// garbage in a reconnect storm.
type NetmapFrame struct {
	parts [][]byte
	size  int
}

func (f *NetmapFrame) add(b []byte) {
	if len(b) > 0 {
		f.parts = append(f.parts, b)
		f.size += len(b)
	}
}

// Parts are the pieces the netmap is written from, in order; the message
// is their concatenation. They are never modified.
func (f *NetmapFrame) Parts() [][]byte { return f.parts }

// Bytes joins the parts; for tests.
func (f *NetmapFrame) Bytes() []byte { return bytes.Join(f.parts, nil) }

var comma = []byte{','}

// serverFields encodes the netmap fields other than self and peers as
// `,"name":value...`, whatever fields control.Netmap grows.
func serverFields(servers control.Netmap) (string, error) {
	raw, err := json.Marshal(servers)
	if err != nil {
		return "", err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", err
	}
	delete(fields, "self")
	delete(fields, "peers")
	if len(fields) == 0 {
		return "", nil
	}
	b, err := json.Marshal(fields) // keys sorted
	if err != nil {
		return "", err
	}
	return "," + string(b[1:len(b)-1]), nil
}

// netmapFrameLocked builds self's full netmap; servers carries the fields
// other than Self and Peers (STUN, relays, ...), encoded as they are.
func (h *Hub) netmapFrameLocked(self control.Node, version int, servers control.Netmap) (*NetmapFrame, error) {
	if h.pol != nil {
		return h.policyNetmapFrameLocked(self, version, servers)
	}
	if !h.peers.valid {
		h.rebuildPeersLocked()
	}
	p := &h.peers
	if servers.STUN == nil {
		servers.STUN = []string{}
	}
	selfJSON, err := json.Marshal(self)
	if err != nil {
		return nil, fmt.Errorf("encode netmap: %w", err)
	}
	rest, err := serverFields(servers)
	if err != nil {
		return nil, fmt.Errorf("encode netmap: %w", err)
	}
	f := &NetmapFrame{}
	f.add([]byte(`{"type":"netmap","v":` + strconv.Itoa(version) + `,"nv":"` + h.versionLocked() + `","netmap":{"self":` + string(selfJSON) + `,"peers":[`))

	// Blob entries start with a comma; the list's first entry must not.
	first := true
	entries := func(b []byte) {
		if len(b) == 0 {
			return
		}
		if first {
			b, first = b[1:], false
		}
		f.add(b)
	}
	// Spans of the blob between the entries to patch: nodes changed since
	// it was built (current encoding, or nothing if removed) and self (left
	// out).
	patch := slices.Sorted(maps.Keys(p.stale))
	if i, found := slices.BinarySearch(patch, self.ID); !found {
		patch = slices.Insert(patch, i, self.ID)
	}
	cur := 0
	for _, id := range patch {
		i, found := slices.BinarySearch(p.ids, id)
		entries(p.blob[p.offs[cur]:p.offs[i]])
		cur = i
		if found {
			cur = i + 1
		}
		if id == self.ID {
			continue
		}
		if e, ok := h.enc[id]; ok {
			if !first {
				f.add(comma)
			}
			first = false
			f.add(e)
		}
	}
	entries(p.blob[p.offs[cur]:])
	f.add([]byte(`]` + rest + `}}`))
	return f, nil
}

package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/policy"
)

// hubPolicy is the hub's view of the access policy. With no policy (pol
// nil) every member is a peer of every other and nothing here is used.
//
// With one, each node has a profile (its place in the compiled policy,
// shared by nodes the policy treats alike), and two nodes are peers when
// either may open connections to the other. Netmaps then hold only peers,
// and deltas go to a stream only for nodes it may see (or has just stopped
// seeing). Costs: a node change is one profile lookup plus one peer test
// per stream; a policy change is one test per stream and class of nodes
// (nodes with the same old and new profile), never per pair of nodes.
type hubPolicy struct {
	pol  *policy.Compiled
	prof map[uint64]*policy.Profile
	// prev holds the profile a node had before changing it (or being
	// removed) since the last flush, to tell who must drop it.
	prev map[uint64]*policy.Profile
	// reprofiled lists connected nodes whose own profile changed: their
	// whole view is diffed at the next flush.
	reprofiled map[uint64]*policy.Profile
	filterJSON map[*policy.Profile][]byte
	// srcHash is policyHash of the source in force, part of the hub's
	// membership digest (netmapversion.go).
	srcHash uint64
}

// policyHash is a policy source's share of the membership digest (0: no
// policy), so that a restarted coordinator resumes no agent across a
// policy change it never sent them.
func policyHash(src []byte) uint64 {
	if src == nil {
		return 0
	}
	sum := sha256.Sum256(src)
	return binary.BigEndian.Uint64(sum[:8])
}

// PolicyNode is n as the access policy sees it.
func PolicyNode(n control.Node) policy.Node {
	ip, _ := netip.ParseAddr(n.IP)
	return policy.Node{ID: n.ID, Name: n.Name, IP: ip, Tags: n.Tags}
}

// placeLocked (re)computes n's profile after a change.
func (h *Hub) placeLocked(n control.Node) {
	if h.pol == nil {
		return
	}
	p := h.pol.Profile(PolicyNode(n))
	old, had := h.prof[n.ID]
	h.prof[n.ID] = p
	if !had || old == p {
		return
	}
	if _, ok := h.prev[n.ID]; !ok {
		h.prev[n.ID] = old
	}
	if _, ok := h.reprofiled[n.ID]; !ok && h.conns[n.ID] != nil {
		h.reprofiled[n.ID] = old
	}
}

// unplaceLocked forgets a removed node's profile.
func (h *Hub) unplaceLocked(id uint64) {
	if h.pol == nil {
		return
	}
	if p, ok := h.prof[id]; ok {
		if _, seen := h.prev[id]; !seen {
			h.prev[id] = p
		}
		delete(h.prof, id)
	}
}

// PolicyPeers tells whether the access policy lets a and b know each
// other (both are members then, unless there is no policy).
func (h *Hub) PolicyPeers(a, b uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.policyPeersLocked(a, b)
}

// SetPolicy installs a compiled policy (nil: none) made from src, which
// the caller has stored; see setPolicyLocked.
func (h *Hub) SetPolicy(c *policy.Compiled, src []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setPolicyLocked(c, src)
}

// loadPolicy installs the stored policy when the hub starts. A stored
// policy passed its checks when it was set; its tests are not run again
// here, since nodes may have changed since and a server must still start.
func (h *Hub) loadPolicy(ctx context.Context) error {
	src, err := h.store.Policy(ctx)
	if err != nil || src == nil {
		return err
	}
	pol, err := policy.Parse(src)
	if err != nil {
		return fmt.Errorf("stored policy: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setPolicyLocked(policy.Compile(pol), src)
	return nil
}

// policyPeersLocked tells whether a and b may know each other.
func (h *Hub) policyPeersLocked(a, b uint64) bool {
	if h.pol == nil {
		return true
	}
	pa, pb := h.prof[a], h.prof[b]
	return pa != nil && pb != nil && policy.Peers(pa, pb)
}

func (h *Hub) filterJSONLocked(p *policy.Profile) []byte {
	if b, ok := h.filterJSON[p]; ok {
		return b
	}
	f := h.pol.Filter(p)
	b, err := json.Marshal(f)
	if err != nil { // plain structs: cannot happen
		b = []byte(`{"in":[],"out":[]}`)
	}
	h.filterJSON[p] = b
	return b
}

// setPolicyLocked installs a compiled policy (nil: none) made from src
// and sends every stream the difference: nodes it now sees or no longer
// sees, and its new filter. A change while running starts a new netmap
// epoch, so no agent that missed it is resumed from an older version.
func (h *Hub) setPolicyLocked(c *policy.Compiled, src []byte) {
	oldPol, oldProf := h.pol, h.prof
	h.pol = c
	newHash := policyHash(src)
	h.digest ^= h.srcHash ^ newHash
	h.srcHash = newHash
	if h.epoch != "" { // "" while the hub starts: restoreVersion follows
		h.epoch, h.seq, h.ring, h.ringIDs = newEpoch(), 0, nil, 0
	}
	h.prof = map[uint64]*policy.Profile{}
	h.prev = map[uint64]*policy.Profile{}
	h.reprofiled = map[uint64]*policy.Profile{}
	h.filterJSON = map[*policy.Profile][]byte{}
	if c != nil {
		for _, id := range h.ids {
			h.prof[id] = c.Profile(PolicyNode(h.nodes[id]))
		}
	}
	if len(h.conns) == 0 {
		return
	}
	// Classes of nodes by (old profile, new profile): a stream's view of
	// every node in a class changes alike.
	type key struct{ old, cur *policy.Profile }
	classes := map[key][]uint64{}
	var order []key
	for _, id := range h.ids {
		k := key{oldProf[id], h.prof[id]}
		if _, ok := classes[k]; !ok {
			order = append(order, k)
		}
		classes[k] = append(classes[k], id)
	}
	allowAll := []byte(`{"in":[],"out":[],"allow_all":true}`)
	// A stream's delta depends only on its own class, so streams of one
	// class share one frame (a policy change at 10,000 nodes then encodes
	// a few hundred frames, not 10,000). The frame may name the stream's
	// own node, which version 2 agents apply to their self view; version 1
	// agents never see themselves, so theirs are made one by one.
	shared := map[key][]byte{}
	for id, sc := range h.conns {
		self := key{oldProf[id], h.prof[id]}
		if f, ok := shared[self]; ok && sc.version >= 2 {
			h.enqueueLocked(sc, f)
			continue
		}
		skip := uint64(0)
		if sc.version < 2 {
			skip = id
		}
		var up [][]byte
		var rm []uint64
		for _, k := range order {
			before := oldPol == nil || self.old != nil && k.old != nil && policy.Peers(self.old, k.old)
			now := c == nil || self.cur != nil && k.cur != nil && policy.Peers(self.cur, k.cur)
			if before == now {
				continue
			}
			for _, x := range classes[k] {
				switch {
				case x == skip:
				case now:
					up = append(up, h.enc[x])
				default:
					rm = append(rm, x)
				}
			}
		}
		filter := allowAll
		if c != nil && self.cur != nil {
			filter = h.filterJSONLocked(self.cur)
		}
		f := deltaFrame(up, rm, filter)
		if sc.version >= 2 {
			shared[self] = f
		}
		h.enqueueLocked(sc, f)
	}
}

// policySendLocked is sendLocked under a policy: each stream gets the
// changed nodes it may see as upserts, and those it could see before and
// no longer may as removals. Streams with the same outcome share a frame.
func (h *Hub) policySendLocked(ids []uint64) {
	prev, reprof := h.prev, h.reprofiled
	h.prev, h.reprofiled = map[uint64]*policy.Profile{}, map[uint64]*policy.Profile{}
	frames := map[string][]byte{}
	mask := make([]byte, len(ids))
	for id, c := range h.conns {
		self := h.prof[id]
		if self == nil {
			continue
		}
		if old, ok := reprof[id]; ok {
			h.resyncLocked(c, old, self, prev)
		}
		some := false
		for i, x := range ids {
			mask[i] = 0
			p, known := h.prof[x]
			switch {
			case x == id:
				if c.version >= 2 && known {
					mask[i] = 1
				}
			case known && policy.Peers(self, p):
				mask[i] = 1
			case h.wasPeerLocked(self, x, prev):
				mask[i] = 2
			}
			some = some || mask[i] != 0
		}
		if !some {
			continue
		}
		frame, ok := frames[string(mask)]
		if !ok {
			var up [][]byte
			var rm []uint64
			for i, x := range ids {
				switch mask[i] {
				case 1:
					up = append(up, h.enc[x])
				case 2:
					rm = append(rm, x)
				}
			}
			frame = deltaFrame(up, rm, nil)
			frames[string(mask)] = frame
		}
		h.metrics.DeltaFrames.Inc()
		h.enqueueLocked(c, frame)
	}
}

// wasPeerLocked tells whether a stream with profile self may have been
// sent node x before x's last change.
func (h *Hub) wasPeerLocked(self *policy.Profile, x uint64, prev map[uint64]*policy.Profile) bool {
	p, ok := prev[x]
	if !ok {
		return false // x did not change profile: it was not a peer either
	}
	return policy.Peers(self, p)
}

// resyncLocked sends a stream whose own profile changed (a rename, say)
// the nodes it gains and loses, and its new filter.
func (h *Hub) resyncLocked(c *Stream, old, cur *policy.Profile, prev map[uint64]*policy.Profile) {
	var up [][]byte
	var rm []uint64
	for _, x := range h.ids {
		if x == c.node {
			continue
		}
		px := h.prof[x]
		before := px
		if p, ok := prev[x]; ok {
			before = p
		}
		was, is := policy.Peers(old, before), policy.Peers(cur, px)
		switch {
		case is && !was:
			up = append(up, h.enc[x])
		case was && !is:
			rm = append(rm, x)
		}
	}
	h.enqueueLocked(c, deltaFrame(up, rm, h.filterJSONLocked(cur)))
}

// deltaFrame encodes a delta message from encoded nodes, removals and an
// encoded filter (nil: unchanged).
func deltaFrame(up [][]byte, rm []uint64, filter []byte) []byte {
	size := 64 + len(filter) + 21*len(rm)
	for _, e := range up {
		size += len(e) + 1
	}
	b := bytes.NewBuffer(make([]byte, 0, size))
	b.WriteString(`{"type":"delta","delta":{`)
	sep := ""
	if len(up) > 0 {
		b.WriteString(`"upsert":[`)
		b.Write(bytes.Join(up, comma))
		b.WriteByte(']')
		sep = ","
	}
	if len(rm) > 0 {
		b.WriteString(sep + `"remove":[`)
		for i, id := range rm {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatUint(id, 10))
		}
		b.WriteByte(']')
		sep = ","
	}
	if filter != nil {
		b.WriteString(sep + `"filter":`)
		b.Write(filter)
	}
	b.WriteString(`}}`)
	return b.Bytes()
}

// policyNetmapFrameLocked builds self's netmap under a policy: only its
// peers, and its filter.
func (h *Hub) policyNetmapFrameLocked(self control.Node, version int, servers control.Netmap) (*NetmapFrame, error) {
	p := h.prof[self.ID]
	if p == nil {
		p = h.pol.Profile(PolicyNode(self))
	}
	servers.Filter = nil
	if servers.STUN == nil {
		servers.STUN = []string{}
	}
	selfJSON, err := json.Marshal(self)
	if err != nil {
		return nil, err
	}
	rest, err := serverFields(servers)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"type":"netmap","v":` + strconv.Itoa(version) + `,"netmap":{"self":`)
	b.Write(selfJSON)
	b.WriteString(`,"peers":[`)
	first := true
	for _, id := range h.ids {
		q := h.prof[id]
		if id == self.ID || q == nil || !policy.Peers(p, q) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(h.enc[id])
	}
	b.WriteString(`],"filter":`)
	b.Write(h.filterJSONLocked(p))
	b.WriteString(rest + `}}`)
	f := &NetmapFrame{}
	f.add(b.Bytes())
	return f, nil
}

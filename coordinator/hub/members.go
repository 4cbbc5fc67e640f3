package hub

import (
	"slices"

	"github.com/meshvpn/meshvpn/control"
)

// sameNode tells whether a change would show peers nothing new.
func sameNode(a, b control.Node) bool {
	return a.ID == b.ID && a.Name == b.Name && a.IP == b.IP && a.IP6 == b.IP6 && a.PublicKey == b.PublicKey &&
		a.Online == b.Online && a.LastSeen.Equal(b.LastSeen) && slices.Equal(a.Tags, b.Tags) && a.SeenFrom == b.SeenFrom
}

// Active tells whether id is a member of the mesh (registered, not removed
// or expired). It is a map lookup, cheap enough for every use of a
// credential.
func (h *Hub) Active(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.nodes[id]
	return ok
}

// Node returns a member's current view.
func (h *Hub) Node(id uint64) (control.Node, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.nodes[id]
	return n, ok
}

// peersLocked tells whether two nodes may signal each other: both must be
// members, and the access policy (if any) must let one reach the other.
func (h *Hub) peersLocked(a, b uint64) bool {
	_, okA := h.nodes[a]
	_, okB := h.nodes[b]
	return okA && okB && a != b && h.policyPeersLocked(a, b)
}

// UpdateMember is Upsert for a node that must already be a member: a node
// re-admitted by its credential while an operator removed it must not come
// back as a ghost.
func (h *Hub) UpdateMember(n control.Node) bool {
	if !h.Active(n.ID) {
		return false
	}
	h.Upsert(n)
	return true
}

// Nodes returns every member, in ID order.
func (h *Hub) Nodes() []control.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]control.Node, 0, len(h.ids))
	for _, id := range h.ids {
		out = append(out, h.nodes[id])
	}
	return out
}

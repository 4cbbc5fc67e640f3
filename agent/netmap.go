package agent

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// handleMessage applies one message from the coordinator's stream.
func (a *Agent) handleMessage(m control.Message) {
	switch m.Type {
	case control.MsgNetmap:
		if m.Netmap != nil {
			a.applyNetmap(m.Netmap)
			// Peers wait for both sides' NAT views before their first
			// direct session (punchorder.go): probe as soon as the STUN
			// servers are known.
			a.natTick(time.Now())
		}
	case control.MsgDelta:
		if m.Delta != nil {
			a.applyDelta(m.Delta)
		}
	case control.MsgResume:
		if m.Netmap != nil {
			a.applyServerFields(m.Netmap)
		}
		if m.Delta != nil {
			a.applyDelta(m.Delta)
		}
	case control.MsgSignal:
		if m.Signal == nil {
			return
		}
		if err := m.Signal.Validate(); err != nil {
			a.logLimit.Log(a.log, slog.LevelDebug, "ignoring invalid signal", "from", m.Signal.From, "err", err.Error())
			return
		}
		a.mu.Lock()
		p := a.peers[m.Signal.From]
		a.mu.Unlock()
		if p == nil {
			a.log.Debug("signal from unknown node", "from", m.Signal.From)
			return
		}
		p.handleSignal(m.Signal)
	case control.MsgError:
		a.logLimit.Log(a.log, slog.LevelWarn, "coordinator says", "error", logsafe.Clip(m.Error))
	default:
		a.log.Debug("ignoring unknown stream message", "type", logsafe.Clip(m.Type))
	}
}

// applyNetmap replaces the whole view: peers missing from it are removed.
// Peers that are already known keep their sessions, so a reconnect to the
// coordinator does not disturb working tunnels.
func (a *Agent) applyNetmap(nm *control.Netmap) {
	a.applyServerFields(nm)
	a.mu.Lock()
	keep := make(map[uint64]bool, len(nm.Peers))
	for _, n := range nm.Peers {
		if n.ID != a.self.ID {
			keep[n.ID] = true
		}
	}
	var gone []uint64
	for id := range a.peers {
		if !keep[id] {
			gone = append(gone, id)
		}
	}
	a.mu.Unlock()
	// Decided before the peers are added, so that a big mesh's peers are
	// born asleep rather than the first ones connected eagerly.
	a.updateLazy(len(keep))
	for _, id := range gone {
		a.removePeer(id)
	}
	for _, n := range nm.Peers {
		a.upsertPeer(n)
	}
	a.peersChanged()
	a.refreshNames()
	a.setPolicyFilter(nm.Filter)
	a.refreshFilter()
}

func (a *Agent) applyDelta(d *control.Delta) {
	if d.STUN != nil {
		a.mu.Lock()
		a.stun = slices.Clone(*d.STUN)
		a.mu.Unlock()
	}
	if d.Relays != nil {
		a.relays.set(*d.Relays)
	}
	for _, id := range d.Remove {
		a.removePeer(id)
		a.dropRelayClient(id)
	}
	if len(d.Upsert) > 0 {
		a.mu.Lock()
		n := len(a.peers)
		for _, u := range d.Upsert {
			if a.peers[u.ID] == nil && u.ID != a.self.ID {
				n++
			}
		}
		a.mu.Unlock()
		a.updateLazy(n) // new peers are born asleep in a big mesh
	}
	for _, n := range d.Upsert {
		a.upsertPeer(n)
	}
	if len(d.Upsert) > 0 || len(d.Remove) > 0 {
		a.peersChanged()
	}
	a.refreshNames()
	if d.Filter != nil {
		a.setPolicyFilter(d.Filter)
	}
	if d.Filter != nil || len(d.Upsert) > 0 || len(d.Remove) > 0 {
		a.refreshFilter()
	}
}

func (a *Agent) upsertPeer(n control.Node) {
	a.mu.Lock()
	if n.ID == a.self.ID {
		// Protocol version 2 sends our own changes too (a rename, say). The
		// public key stays ours: the coordinator only ever echoes it.
		n.PublicKey = a.self.PublicKey
		a.self = n
		a.mu.Unlock()
		return
	}
	p := a.peers[n.ID]
	a.mu.Unlock()
	// Canonical only: the coordinator compares keys as strings, so an
	// alias spelling of another node's key (stored by an older coordinator)
	// would be a second node with the same WireGuard key.
	if err := control.ValidatePublicKey(n.PublicKey); err != nil {
		a.log.Warn("peer with invalid public key ignored", "peer", n.Name, "err", err)
		return
	}
	key, err := parseKey(n.PublicKey)
	if err == nil && key == a.pub {
		err = errors.New("it is our own key")
	}
	if err != nil {
		a.log.Warn("peer with invalid public key ignored", "peer", n.Name, "err", err)
		return
	}
	ip, err := netip.ParseAddr(n.IP)
	// The resolver's address is every node's own: a peer holding it would
	// take DNS queries to the tunnel.
	if err != nil || !ip.Is4() || ip == control.ResolverAddr {
		a.log.Warn("peer with invalid overlay address ignored", "peer", n.Name, "ip", n.IP)
		return
	}
	if p != nil && p.key == key {
		p.mu.Lock()
		ipChanged := (p.node.IP != n.IP || a.peerIP6(p.node) != a.peerIP6(n)) && p.wgAdded
		p.mu.Unlock()
		if ipChanged {
			overlay := a.overlayIPs(n)
			if err := p.wgChange(func() error { return a.wg.setOverlayIP(key, overlay) }); err != nil {
				a.log.Error("update WireGuard peer", "peer", n.Name, "err", err)
			}
		}
		p.update(n)
		return
	}
	if p != nil {
		// The node re-registered with a new key: a new peer as far as
		// WireGuard is concerned.
		a.removePeer(n.ID)
	}
	// WireGuard learns of the peer only when ICE has found a path (see
	// peer.onSelected): until then its packets are dropped instead of
	// queued behind a handshake that has nowhere to go.
	asleep := a.lazyActive.Load()
	p = newPeer(a, n, key, asleep)
	a.mu.Lock()
	a.peers[n.ID] = p
	a.mu.Unlock()
	if asleep {
		// One line per peer is too many in a mesh of thousands.
		a.log.Debug("peer added, path on demand", "peer", n.Name, "ip", n.IP, "ip6", addrString(a.peerIP6(n)), "online", n.Online)
	} else {
		a.log.Info("peer added", "peer", n.Name, "ip", n.IP, "ip6", addrString(a.peerIP6(n)), "online", n.Online)
	}
	a.sendNATInfo(p)
	p.kick()
}

func (a *Agent) removePeer(id uint64) {
	a.mu.Lock()
	p := a.peers[id]
	delete(a.peers, id)
	a.mu.Unlock()
	if p == nil {
		return
	}
	p.close()
	p.queue.drop()
	a.forgetNATInfo(id)
	// After close, wgChange refuses; taking wgMu waits for one in flight.
	p.wgMu.Lock()
	err := a.wg.removePeer(p.key)
	p.wgMu.Unlock()
	if err != nil {
		a.log.Error("remove WireGuard peer", "peer", p.node.Name, "err", err)
	}
	a.log.Info("peer removed", "peer", p.node.Name)
}

// dropAllPeers forgets every peer (WireGuard peer and ICE session) when the
// coordinator refuses this node: it was removed or expired, and its peers
// have already dropped it, so the tunnels are dead anyway.
func (a *Agent) dropAllPeers(reason string) {
	a.mu.Lock()
	ids := make([]uint64, 0, len(a.peers))
	for id := range a.peers {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.removePeer(id)
	}
	a.peersChanged()
	a.refreshNames()
	if len(ids) > 0 {
		a.log.Warn("dropped every peer: the coordinator no longer admits this node", "reason", reason, "peers", len(ids))
	}
}

// peersChanged runs once after a netmap or delta changed the peers: the
// lazy mode follows the mesh's size, and the data path's overlay address
// index is rebuilt (copy on write: the TUN reader never locks).
func (a *Agent) peersChanged() {
	ps := a.peerList()
	a.updateLazy(len(ps))
	idx := make(map[netip.Addr]*peer, len(ps))
	for _, p := range ps {
		p.mu.Lock()
		n := p.node
		p.mu.Unlock()
		if ip, err := netip.ParseAddr(n.IP); err == nil {
			idx[ip] = p
		}
		if ip6 := a.peerIP6(n); ip6.IsValid() {
			idx[ip6] = p
		}
	}
	a.ipIndex.Store(&idx)
}

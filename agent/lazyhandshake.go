package agent

import (
	"fmt"
	"net/netip"
)

// The first WireGuard handshake with a peer. Only the controlling
// side initiates (applyPath), as soon as its path is installed; the
// controlled side used to create its WireGuard peer only when its own
// path was installed. Both happen within a millisecond of each other (the
// controlled side selects the pair half a round trip earlier, but its
// callback runs asynchronously, and recreatePeer's remove-and-add leaves a
// moment with no peer at all): in about one first packet in five the
// initiation arrived while the controlled side had no peer, wireguard-go
// dropped it, and the packet waited for handshakeGrace (400 ms) and a
// recreated peer: 520-680 ms instead of about 200 ms (TestLazyFirstPacket).
//
// So the controlled side creates the peer, without an endpoint, as soon
// as it accepts the session's offer, tens of milliseconds before any pair
// can be selected; the first path then only points it at the endpoint.
// wireguard-go answers an initiation for a peer with no endpoint at the
// packet's source. Eager agents started together had the same race
// (TestEagerFirstHandshake: one start in ten).
//
// Nothing may make wireguard-go initiate towards the missing endpoint: it
// would fail, and its retries (every 5 s) could cross the controlling
// side's handshake once the endpoint is there. A lazy agent's packets to
// the peer wait in the queue until the handshake (lazytun.go), so its
// early peer gets its overlay addresses at once and accepts the first
// packets that follow the handshake. An eager agent hands every packet to
// WireGuard, so its early peer gets no overlay addresses until the path:
// no packet is routed to it, and it has no keepalive, so it never
// initiates; it only answers. (Data that crosses the handshake before
// the controlled side's path is installed, within a millisecond or so, is
// dropped for its source address, as it was before for want of a peer.)

// prepareWGLocked creates the controlled side's WireGuard peer ahead of
// its first path. Called with p.mu held, when an offer is accepted.
func (p *peer) prepareWGLocked() {
	if p.controlling || p.wgAdded || p.closed || p.asleep {
		return
	}
	var overlay []netip.Prefix
	if p.a.lazyActive.Load() {
		overlay = p.a.overlayIPs(p.node)
	}
	// wgChange takes wgMu and then p.mu: not under p.mu.
	go func() {
		err := p.wgChange(func() error {
			p.mu.Lock()
			added := p.wgAdded // a path came first: applyPath creates the peer
			p.mu.Unlock()
			if added || p.wgEarly {
				return nil
			}
			if err := p.a.wg.addPeer(p.key, overlay); err != nil {
				return err
			}
			p.wgEarly = true
			return nil
		})
		if err != nil {
			p.log.Error("create WireGuard peer ahead of the path", "err", err)
		}
	}()
}

// addPeer creates the peer with the given overlay addresses (none: no
// packet is routed to it) and no endpoint (nothing is sent to it until
// one is set); an existing peer is left as it is.
func (w *wgDevice) addPeer(key Key, overlay []netip.Prefix) error {
	cfg := fmt.Sprintf("public_key=%s\nreplace_allowed_ips=true\n%s", key.Hex(), allowedIPs(overlay))
	if err := w.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("create WireGuard peer: %w", err)
	}
	return nil
}

// placePeer gives a peer created by addPeer its overlay addresses (they
// may have changed since) and endpoint, keeping any handshake it already
// made; with keepalive as setEndpoint.
func (w *wgDevice) placePeer(key Key, overlay []netip.Prefix, ep netip.AddrPort, keepalive bool) error {
	cfg := fmt.Sprintf("public_key=%s\nupdate_only=true\nreplace_allowed_ips=true\n%sendpoint=%s\n", key.Hex(), allowedIPs(overlay), ep)
	if keepalive {
		cfg += fmt.Sprintf("persistent_keepalive_interval=%d\n", persistentKeepalive)
	}
	if err := w.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("set WireGuard endpoint: %w", err)
	}
	return nil
}

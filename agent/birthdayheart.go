package agent

import (
	"net/netip"
	"time"
)

// A birthday path has no ICE consent, and WireGuard's counters cannot
// tell it is alive: wireguard-go restarts its persistent-keepalive timer
// on every packet it receives as well as sends (TestWireGuardKeepalive-
// RestartedOnReceipt), so on an idle tunnel each 25 s round is a race
// between one side's timer and the other's keepalive, and a side can
// stay silent for several rounds on a working path. Judged by WireGuard's
// counters, its peer took the path for dead after punchedSilence and fell
// back to the relay, while the silent side kept calling its path direct;
// its WireGuard then roamed to the relay with the peer's first relayed
// packet (issue 10's flake: "direct" with the relay as endpoint, seen in
// TestMeshAllNATPairs as a symmetric side's "birthday path down: nothing
// from the peer" two minutes in).
//
// So the path carries its own heartbeat: the easy side sends a probe with
// the attempt's token to the peer's mapping every punchedHeartbeat; the
// symmetric side's socket answers it (readPunched). Each side counts what
// the path itself brings from the peer: replies on the easy side,
// anything on the won socket on the symmetric side. The heartbeat also
// keeps both routers' mappings open when WireGuard is idle or has roamed.

const (
	// punchedHeartbeat: how often the easy side checks the path.
	punchedHeartbeat = 10 * time.Second
	// punchedSilence: a birthday path that brought nothing from the peer
	// for this long (several heartbeats) is dropped.
	punchedSilence = 6*punchedHeartbeat + 5*time.Second
)

// punchedSilentLocked tells whether the birthday path brought nothing
// from the peer for punchedSilence.
func (p *peer) punchedSilentLocked(now time.Time) bool {
	last := time.Unix(0, p.bd.heard.Load())
	if last.Before(p.punched.started) {
		last = p.punched.started
	}
	return now.Sub(last) > punchedSilence
}

// heardPunched records that the birthday path brought something from
// the peer now.
func (p *peer) heardPunched() { p.bd.heard.Store(time.Now().UnixNano()) }

// birthdayHeartbeat (easy side) probes the peer's mapping at to with tok
// while that is the peer's birthday path, and notes each reply.
func (p *peer) birthdayHeartbeat(tok bdayToken, to netip.AddrPort) {
	replies := p.a.bind.bday.expect(tok)
	defer p.a.bind.bday.forget(tok, replies)
	pkt := bdayPacket(bdayProbeType, tok)
	tick := time.NewTicker(punchedHeartbeat)
	defer tick.Stop()
	_ = p.a.bind.SendTo(pkt, to) // the first at once: the path is checked from its start
	for {
		select {
		case from := <-replies:
			if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) == to {
				p.heardPunched()
			}
		case <-tick.C:
			if !p.punchedAt(tok, to) {
				return
			}
			if err := p.a.bind.SendTo(pkt, to); err != nil {
				return
			}
		}
	}
}

// punchedAt tells whether the birthday path of tok at to is still up.
func (p *peer) punchedAt(tok bdayToken, to netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && p.punched.up() && p.punched.endpoint == to && p.bd.tok == tok
}

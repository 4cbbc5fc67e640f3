package agent

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
)

// peer manages the path to one other node: one ICE session at a time, whose
// selected pair becomes the WireGuard endpoint of the peer.
//
// Sessions are driven by the controlling side (the node with the smaller
// public key, so both sides agree without talking):
//
//	controlling: start → send offer(session) → gather/trickle candidates
//	             ← answer(session): start checks (Dial)
//	controlled:  ← offer(session): new ICE agent → send answer → gather → Accept
//	             on start-up or failure: send restart, asking for an offer
//
// Every message names its session; anything for another session is stale and
// dropped. A session that fails is replaced with backoff; the WireGuard
// endpoint of the old one stays in place until a new pair is selected, so a
// working tunnel is never torn down to renegotiate.
type peer struct {
	a           *Agent
	id          uint64
	key         Key
	controlling bool
	log         *slog.Logger

	mu       sync.Mutex
	node     control.Node
	ice      *ice.Agent
	session  string
	answered bool // controlling: the answer for session has arrived
	started  time.Time
	state    ice.ConnectionState
	retry    backoff
	nextTry  time.Time // earliest (re)start or restart request
	deferred bool      // a restart request waits for the current offer's answer

	localType, remoteType string
	endpoint              netip.AddrPort
	wgAdded               bool // WireGuard knows the peer (after the first path)
	closed                bool

	// wgMu serialises this peer's WireGuard changes with its removal, so a
	// path selected just as the peer is removed cannot add it back.
	wgMu sync.Mutex
}

// wgChange runs fn, a change to this peer's WireGuard configuration, unless
// the peer is closed.
func (p *peer) wgChange(fn func() error) error {
	p.wgMu.Lock()
	defer p.wgMu.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil
	}
	return fn()
}

func newPeer(a *Agent, n control.Node, key Key) *peer {
	return &peer{
		a:           a,
		id:          n.ID,
		key:         key,
		node:        n,
		controlling: a.pub.String() < key.String(),
		log:         a.log.With("peer", n.Name),
	}
}

const (
	// answerTimeout: an offer with no answer by then is sent again.
	answerTimeout = 5 * time.Second
	// restartHold: a restart request this soon after an offer waits to see
	// whether that offer is answered, so two agents starting together do not
	// replace each other's sessions in a loop.
	restartHold = 1500 * time.Millisecond
)

// update applies a netmap change to the node.
func (p *peer) update(n control.Node) {
	p.mu.Lock()
	wasOnline := p.node.Online
	p.node = n
	p.mu.Unlock()
	if n.Online && !wasOnline {
		p.kick()
	}
}

// kick starts negotiating now if the path is not already up: the peer just
// came online or we just learnt of it.
func (p *peer) kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.node.Online || p.connectedLocked() {
		return
	}
	p.retry.reset()
	p.nextTry = time.Time{}
	if p.controlling {
		p.startLocked()
	} else {
		p.requestRestartLocked()
	}
}

func (p *peer) connectedLocked() bool {
	return p.ice != nil && (p.state == ice.ConnectionStateConnected || p.state == ice.ConnectionStateCompleted)
}

// tick is called every second and repairs whatever is stuck.
func (p *peer) tick(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.node.Online || now.Before(p.nextTry) {
		return
	}
	if p.controlling {
		switch {
		case p.ice == nil:
			p.startLocked()
		case p.deferred && !p.answered:
			p.startLocked()
		case !p.answered && now.Sub(p.started) > answerTimeout:
			p.startLocked()
		case p.state == ice.ConnectionStateFailed:
			p.startLocked()
		}
		p.deferred = false
		return
	}
	if p.ice == nil || p.state == ice.ConnectionStateFailed {
		p.requestRestartLocked()
	}
}

func (p *peer) requestRestartLocked() {
	p.nextTry = time.Now().Add(p.retry.next())
	p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalRestart})
}

// startLocked replaces the session with a new one and offers it.
func (p *peer) startLocked() {
	if len(p.a.stunURLs()) == 0 {
		p.log.Debug("no STUN server known yet; offering host candidates only")
	}
	agent, err := p.newICELocked(newSessionID())
	if err != nil {
		p.log.Error("create ICE agent", "err", err)
		p.nextTry = time.Now().Add(p.retry.next())
		return
	}
	p.answered = false
	p.nextTry = time.Now().Add(p.retry.next())
	ufrag, pwd, _ := agent.GetLocalUserCredentials()
	p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalOffer, Session: p.session, Ufrag: ufrag, Pwd: pwd})
	if err := agent.GatherCandidates(); err != nil {
		p.log.Warn("gather candidates", "err", err)
	}
}

// newICELocked closes the current ICE agent and makes a fresh one for session.
func (p *peer) newICELocked(session string) (*ice.Agent, error) {
	p.closeICELocked()
	agent, err := p.a.newICEAgent()
	if err != nil {
		return nil, err
	}
	p.ice = agent
	p.session = session
	p.started = time.Now()
	p.state = ice.ConnectionStateNew

	_ = agent.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			return
		}
		p.mu.Lock()
		current := p.ice == agent
		p.mu.Unlock()
		if current {
			p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalCandidate, Session: session, Candidate: c.Marshal()})
		}
	})
	_ = agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		p.onState(agent, s)
	})
	_ = agent.OnSelectedCandidatePairChange(func(local, remote ice.Candidate) {
		p.onSelected(agent, local, remote)
	})
	return agent, nil
}

func (p *peer) closeICELocked() {
	if p.ice == nil {
		return
	}
	old := p.ice
	p.ice = nil
	p.session = ""
	p.state = ice.ConnectionStateClosed
	// Closing waits for ICE's goroutines; never hold our lock for that.
	go old.Close()
}

func (p *peer) onState(agent *ice.Agent, s ice.ConnectionState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ice != agent {
		return
	}
	p.state = s
	p.log.Info("ICE state", "state", s.String(), "session", p.session)
	switch s {
	case ice.ConnectionStateConnected, ice.ConnectionStateCompleted:
		p.retry.reset()
		p.nextTry = time.Time{}
	case ice.ConnectionStateFailed:
		p.nextTry = time.Now().Add(p.retry.next())
	}
}

func (p *peer) onSelected(agent *ice.Agent, local, remote ice.Candidate) {
	ip, err := netip.ParseAddr(remote.Address())
	if err != nil {
		p.log.Warn("selected remote candidate has no IP address", "addr", remote.Address())
		return
	}
	ep := netip.AddrPortFrom(ip.Unmap(), uint16(remote.Port()))
	p.mu.Lock()
	if p.ice != agent {
		p.mu.Unlock()
		return
	}
	p.localType = local.Type().String()
	p.remoteType = remote.Type().String()
	p.endpoint = ep
	overlay, _ := netip.ParseAddr(p.node.IP)
	first := !p.wgAdded
	p.wgAdded = true
	p.mu.Unlock()
	p.log.Info("path selected", "path", pathOf(local.Type(), remote.Type()), "local", local.Type().String()+" "+net.JoinHostPort(local.Address(), strconv.Itoa(local.Port())), "remote", remote.Type().String()+" "+ep.String())
	// Only the controlling side starts the first handshake: when both
	// initiate at the same instant, wireguard-go can end up with keypairs
	// that do not match and stays silent until its 15 s retry. The
	// controlled side turns its keepalives on a little later, which also
	// covers a controlling side that never got through. The first path
	// creates the WireGuard peer: the controlled side selects on the
	// controlling side's nomination, half a round trip before the
	// controlling side does, so it knows the peer when the handshake comes.
	err = p.wgChange(func() error {
		if first {
			return p.a.wg.recreatePeer(p.key, overlay, ep, p.controlling)
		}
		return p.a.wg.setEndpoint(p.key, ep, p.controlling)
	})
	if err != nil {
		p.log.Error("set WireGuard endpoint", "err", err)
		return
	}
	if p.controlling {
		time.AfterFunc(handshakeGrace, func() { p.ensureHandshake(agent, overlay, ep) })
		return
	}
	time.AfterFunc(3*handshakeGrace, func() {
		if p.current(agent, ep) {
			if err := p.wgChange(func() error { return p.a.wg.setEndpoint(p.key, ep, true) }); err != nil {
				p.log.Error("enable WireGuard keepalives", "err", err)
			}
		}
	})
}

// handshakeGrace is how long a new path may go without a WireGuard
// handshake before the controlling side recreates the peer to force one.
const handshakeGrace = 400 * time.Millisecond

// current tells whether ep, selected by agent, is still the peer's path.
func (p *peer) current(agent *ice.Agent, ep netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ice == agent && p.endpoint == ep && !p.closed
}

func (p *peer) ensureHandshake(agent *ice.Agent, overlay netip.Addr, ep netip.AddrPort) {
	if !p.current(agent, ep) || p.a.wg.handshaked(p.key) {
		return
	}
	p.log.Debug("no handshake on the new path yet, recreating the WireGuard peer")
	if err := p.wgChange(func() error { return p.a.wg.recreatePeer(p.key, overlay, ep, true) }); err != nil {
		p.log.Error("recreate WireGuard peer", "err", err)
	}
}

// handleSignal applies one message from the peer.
func (p *peer) handleSignal(s *control.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.log.Debug("signal", "kind", s.Kind, "session", s.Session, "current", p.session, "candidate", s.Candidate)
	switch s.Kind {
	case control.SignalRestart:
		if !p.controlling {
			return
		}
		if !p.answered && time.Since(p.started) < restartHold && p.ice != nil {
			// Our offer may be in flight to the peer's new instance.
			p.deferred = true
			p.nextTry = p.started.Add(restartHold)
			return
		}
		p.retry.reset()
		p.startLocked()
	case control.SignalOffer:
		if p.controlling {
			return
		}
		agent, err := p.newICELocked(s.Session)
		if err != nil {
			p.log.Error("create ICE agent", "err", err)
			return
		}
		ufrag, pwd, _ := agent.GetLocalUserCredentials()
		p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalAnswer, Session: s.Session, Ufrag: ufrag, Pwd: pwd})
		if _, err := agent.StartAccept(s.Ufrag, s.Pwd); err != nil {
			p.log.Warn("start ICE checks", "err", err)
		}
		if err := agent.GatherCandidates(); err != nil {
			p.log.Warn("gather candidates", "err", err)
		}
	case control.SignalAnswer:
		if !p.controlling || s.Session != p.session || p.answered || p.ice == nil {
			return
		}
		p.answered = true
		if _, err := p.ice.StartDial(s.Ufrag, s.Pwd); err != nil {
			p.log.Warn("start ICE checks", "err", err)
		}
	case control.SignalCandidate:
		if s.Session != p.session || p.ice == nil {
			return
		}
		c, err := ice.UnmarshalCandidate(s.Candidate)
		if err != nil {
			p.log.Debug("bad remote candidate", "err", err)
			return
		}
		if err := p.ice.AddRemoteCandidate(c); err != nil {
			p.log.Debug("add remote candidate", "err", err)
		}
	}
}

func (p *peer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.closeICELocked()
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func pathOf(local, remote ice.CandidateType) string {
	if local == ice.CandidateTypeRelay || remote == ice.CandidateTypeRelay {
		return PathRelay
	}
	return PathDirect
}

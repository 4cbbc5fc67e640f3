package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/agent/datapath"
	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// peer manages the path to one other node. Its two lanes (see lane) find a
// direct and a relayed path; the peer puts the best working one into
// WireGuard: direct when the direct lane is up, else relayed. When neither
// works, WireGuard keeps the last endpoint: a working tunnel is never torn
// down to renegotiate.
type peer struct {
	a           *Agent
	id          uint64
	key         Key
	controlling bool
	log         *slog.Logger

	mu     sync.Mutex
	node   control.Node
	direct lane
	relay  lane
	// punched is the path a birthday punch found (birthdaypath.go), bd
	// the punching itself (birthdaypunch.go).
	punched lane
	bd      birthdayState
	sync    syncState         // synchronized opens (syncopen.go)
	roam    datapath.RoamHold // what relayed packets roam WireGuard to (datapath/roam.go)
	active  *lane             // the lane whose path WireGuard uses, nil before the first

	endpoint   netip.AddrPort // WireGuard's endpoint
	wgAdded    bool           // WireGuard knows the peer (after the first path)
	closed     bool
	changedAt  time.Time // last path change
	lastChange string    // why, for status
	peerNAT    string    // the peer's own view of its network (Signal.NAT)
	live       liveness  // what WireGuard's counters say (liveness.go)
	// peerFiltering is the peer's NAT filtering (Signal.Filtering): ""
	// until the peer has measured it.
	peerFiltering string
	peerOpenTTL   int // Signal.OpenTTL
	// onlineAt is when this agent last saw the peer come online;
	// directAfter how long the first direct path took from then (0 before).
	onlineAt    time.Time
	directAfter time.Duration
	// waitFrom is when the wait for both NAT views began (the peer was
	// added, or came online): see orderReadyLocked.
	waitFrom time.Time

	// wgMu serialises this peer's WireGuard changes with its removal, so a
	// path selected just as the peer is removed cannot add it back.
	wgMu sync.Mutex
	// wgEarly (under wgMu): WireGuard has the peer, created before its
	// first path (lazyhandshake.go); that path must not recreate it.
	wgEarly bool

	// Paths on demand (lazy.go). asleep: no sessions, no WireGuard peer;
	// sleeping mirrors it for the data path. ready: WireGuard has the
	// peer's session, packets pass (lazytun.go); used: a packet went
	// through since the last tick; waking: a wake is under way.
	asleep        bool
	sleeping      atomic.Bool
	ready         atomic.Bool
	used          atomic.Bool
	waking        atomic.Bool
	paid          bool // a waking signal paid for the session it starts
	wokeAt        time.Time
	lastUsed      time.Time // last tick that saw traffic, or the wake
	directUpSince time.Time // lazyTick: the direct lane is up since
	queue         pktQueue
	// shared is the relay lane's state on the shared relay client
	// (relayshared.go), guarded by mu.
	shared sharedPeer
	// directIdle: the direct path's consent checks are at the idle pace,
	// so the data path's next packet to or from the peer kicks them
	// (consentrun.go).
	directIdle  atomic.Bool
	consentKick chan struct{}
}

// wgChange runs fn, a change to this peer's WireGuard configuration, unless
// the peer is closed.
func (p *peer) wgChange(fn func() error) error {
	p.wgMu.Lock()
	defer p.wgMu.Unlock()
	p.mu.Lock()
	closed := p.closed || p.asleep
	p.mu.Unlock()
	if closed {
		return nil
	}
	return fn()
}

func newPeer(a *Agent, n control.Node, key Key, asleep bool) *peer {
	p := &peer{
		a:           a,
		id:          n.ID,
		key:         key,
		node:        n,
		controlling: a.pub.String() < key.String(),
		log:         a.log.With("peer", n.Name),
		consentKick: make(chan struct{}, 1),
	}
	p.direct = lane{p: p}
	p.relay = lane{p: p, name: control.LaneRelay}
	p.punched = lane{p: p, name: lanePunched}
	if n.Online {
		p.onlineAt = time.Now()
	}
	p.waitFrom = time.Now()
	p.asleep, p.lastUsed = asleep, time.Now()
	p.sleeping.Store(asleep)
	if asleep {
		p.lastChange = "not used yet"
	}
	return p
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
	if n.Online != wasOnline {
		p.forgetPeerNATLocked() // natepoch.go
	}
	if n.Online && !wasOnline {
		p.onlineAt, p.directAfter, p.waitFrom = time.Now(), 0, time.Now()
		p.sync.attempts = 0
	}
	p.mu.Unlock()
	if n.Online && !wasOnline {
		p.a.askNATInfo(p) // it may be a new run that knows nothing (natepoch.go)
		p.kick()
	}
}

// kick starts negotiating now on every lane that is not up: the peer just
// came online, we just learnt of it, or relays became available.
func (p *peer) kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.node.Online || p.asleep {
		return
	}
	p.direct.kickLocked()
	p.relay.kickLocked()
}

// tick is called every second and repairs whatever is stuck.
func (p *peer) tick(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.node.Online || p.asleep {
		return
	}
	if !p.controlling && p.direct.heldOffer != nil {
		p.direct.releaseOfferLocked(now) // natepoch.go
	}
	p.direct.tickLocked(now)
	p.relay.tickLocked(now)
	p.sharedTickLocked(now) // relayshared.go
	p.birthdayTickLocked(now)
}

// restartRelay replaces the relay lane's session, e.g. with fresh
// credentials, unless traffic is using it right now.
func (p *peer) restartRelay() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.node.Online || p.asleep || p.active == &p.relay {
		return
	}
	p.relay.closeICELocked()
	p.relay.kickLocked()
}

func (p *peer) lane(name string) *lane {
	switch name {
	case "":
		return &p.direct
	case control.LaneRelay:
		return &p.relay
	}
	return nil
}

func (p *peer) onState(l *lane, agent *ice.Agent, s ice.ConnectionState) {
	p.mu.Lock()
	if l.ice != agent {
		p.mu.Unlock()
		return
	}
	l.state = s
	// Debug: a relayed peer's direct lane retries for ever, and the path
	// changes that matter are logged by reconsider.
	p.log.Debug("ICE state", "lane", l.label(), "state", s.String(), "session", l.session)
	switch s {
	case ice.ConnectionStateConnected, ice.ConnectionStateCompleted:
		l.retry.reset()
		l.nextTry = time.Time{}
		l.everUp = true
	case ice.ConnectionStateChecking:
		l.checkingAt = time.Now()
	case ice.ConnectionStateFailed:
		p.noteFailedLocked(l)
	}
	apply := p.reconsiderLocked(l.label() + " lane " + s.String())
	l.startConsentLocked() // consentrun.go
	p.mu.Unlock()
	if apply != nil {
		apply()
	}
}

func (p *peer) onSelected(l *lane, agent *ice.Agent, local, remote ice.Candidate) {
	ip, err := netip.ParseAddr(remote.Address())
	if err != nil {
		p.log.Warn("selected remote candidate has no IP address", "addr", logsafe.Clip(remote.Address()))
		return
	}
	ep := netip.AddrPortFrom(ip.Unmap(), uint16(remote.Port()))
	p.mu.Lock()
	if l.ice != agent {
		p.mu.Unlock()
		return
	}
	l.local, l.remote, l.endpoint, l.selected = local, remote, ep, true
	if l.relay() && l.conn != nil {
		if l.relayEP != nil {
			p.a.bind.Unroute(l.relayEP)
		}
		l.relayEP = p.a.bind.Route(ep, l.conn)
		l.reading.Store(l.relayEP)
		if l.reader != agent {
			l.reader = agent
			go p.readRelayed(l, l.conn)
		}
	}
	p.log.Debug("pair selected", "lane", l.label(),
		"local", local.Type().String()+" "+net.JoinHostPort(local.Address(), strconv.Itoa(local.Port())),
		"remote", remote.Type().String()+" "+ep.String())
	apply := p.reconsiderLocked(l.label() + " pair selected")
	l.startConsentLocked() // consentrun.go
	p.mu.Unlock()
	if apply != nil {
		apply()
	}
}

// noteFailedLocked records that l's session failed; the tick replaces it.
func (p *peer) noteFailedLocked(l *lane) {
	p.a.countICEFailure()
	l.failures++
	l.selected = false
	l.nextTry = time.Now().Add(l.retry.next())
	l.quietAfterFailureLocked()
}

// laneFailedLocked fails l's session on the agent's own verdict (consent
// lost, checks that never succeeded), as pion's failed state does, and
// returns the WireGuard change to make after the lock.
func (p *peer) laneFailedLocked(l *lane, why string) func() {
	l.state = ice.ConnectionStateFailed
	l.stopConsentLocked()
	p.log.Debug("ICE state", "lane", l.label(), "state", "failed", "why", why, "session", l.session)
	p.noteFailedLocked(l)
	return p.reconsiderLocked(why)
}

// readRelayed hands the WireGuard messages that arrive through the relay
// lane's allocation to WireGuard, until the session's connection closes.
func (p *peer) readRelayed(l *lane, c *ice.Conn) {
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		ep := l.reading.Load()
		if ep == nil || classify(buf[:n]) != kindWireGuard {
			continue
		}
		p.a.bind.Deliver(buf[:n], p.roam.Endpoint(ep, time.Now()))
	}
}

// reconsiderLocked picks the lane WireGuard should use and returns the
// WireGuard change to make once the lock is released (nil for none).
func (p *peer) reconsiderLocked(why string) func() {
	var best *lane
	switch {
	case p.closed || p.asleep:
		return nil
	case p.direct.up():
		best = &p.direct
	case p.punched.up():
		best = &p.punched
	case p.relay.up():
		best = &p.relay
	default:
		if p.active != nil && p.lastChange != "no working path" {
			// An unused on-demand path that breaks is put to sleep
			// (lazy.go), usually because the peer tore it down: not
			// worth a warning.
			level := slog.LevelWarn
			if p.quietLocked(time.Now()) {
				level = slog.LevelDebug
			}
			p.log.Log(context.Background(), level, "no working path to peer; keeping the last endpoint", "why", why)
			p.lastChange = "no working path"
			p.changedAt = time.Now()
		}
		return nil
	}
	ep := best.endpoint
	p.roam.Set(p.a.bind.Bind, best.relay(), ep, time.Now()) // datapath/roam.go
	if best == p.active && ep == p.endpoint && p.wgAdded {
		return nil
	}
	prev := p.active
	p.active, p.endpoint = best, ep
	p.changedAt = time.Now()
	if !best.relay() && p.directAfter == 0 && !p.onlineAt.IsZero() {
		p.directAfter = max(p.changedAt.Sub(p.onlineAt), time.Millisecond)
	}
	first := !p.wgAdded
	p.wgAdded = true
	switch {
	case prev == nil:
		p.lastChange = "first path"
		p.log.Info("path up", "path", best.label(), "endpoint", ep.String(), "via", best.via())
	case prev == best:
		p.lastChange = "endpoint moved"
		p.log.Info("path endpoint changed", "path", best.label(), "endpoint", ep.String())
	case best.relay():
		p.lastChange = "direct path lost, relayed"
		p.log.Warn("direct path lost, falling back to relay", "why", why, "endpoint", ep.String(), "via", best.via())
	default:
		p.lastChange = "upgraded from relay to direct"
		p.log.Info("direct path found, leaving the relay", "endpoint", ep.String())
	}
	if best == &p.punched && prev != best {
		p.lastChange = p.bd.result
	}
	if best == &p.direct { // prev too after a peer's restart (syncopen.go)
		if c := p.syncLastChangeLocked(); c != "" {
			p.lastChange = c
		}
	}
	overlay := p.a.overlayIPs(p.node)
	return func() { p.applyPath(best, overlay, ep, first) }
}

// applyPath puts ep into WireGuard.
//
// Only the controlling side starts the first handshake: when both initiate
// at the same instant, wireguard-go can end up with keypairs that do not
// match and stays silent until its 15 s retry. The controlled side turns its
// keepalives on a little later, which also covers a controlling side that
// never got through. The first path creates the WireGuard peer, or, on the
// controlled side, completes the one created when it accepted the offer
// (lazyhandshake.go), so that it knows the peer when the handshake comes.
func (p *peer) applyPath(l *lane, overlay []netip.Prefix, ep netip.AddrPort, first bool) {
	err := p.wgChange(func() error {
		// Two lanes' callbacks decide under p.mu but apply after it, in
		// either order: a late apply must not put back the endpoint a newer
		// one replaced (status then said direct while WireGuard still sent
		// through the relay). So what is installed is the endpoint current
		// now, under wgMu.
		if cur, ok := p.currentEndpoint(); ok {
			ep = cur
		}
		if first && p.wgEarly {
			p.wgEarly = false
			return p.a.wg.placePeer(p.key, overlay, ep, p.controlling)
		}
		if first {
			return p.a.wg.recreatePeer(p.key, overlay, ep, p.controlling)
		}
		return p.a.wg.setEndpoint(p.key, ep, p.controlling)
	})
	if err != nil {
		p.log.Error("set WireGuard endpoint", "err", err)
		return
	}
	p.pathApplied() // readywatch.go
	if p.controlling {
		time.AfterFunc(handshakeGrace, func() { p.ensureHandshake(l, overlay, ep) })
		return
	}
	time.AfterFunc(3*handshakeGrace, func() {
		if p.current(l, ep) {
			if err := p.wgChange(func() error { return p.a.wg.setEndpoint(p.key, ep, true) }); err != nil {
				p.log.Error("enable WireGuard keepalives", "err", err)
			}
		}
	})
}

// handshakeGrace is how long a new path may go without a WireGuard
// handshake before the controlling side recreates the peer to force one.
const handshakeGrace = 400 * time.Millisecond

// currentEndpoint is the endpoint of the peer's path now, if it has one.
func (p *peer) currentEndpoint() (netip.AddrPort, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endpoint, p.active != nil && !p.closed
}

// current tells whether ep on l is still the peer's path.
func (p *peer) current(l *lane, ep netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active == l && p.endpoint == ep && !p.closed
}

func (p *peer) ensureHandshake(l *lane, overlay []netip.Prefix, ep netip.AddrPort) {
	if !p.current(l, ep) || p.a.wg.handshaked(p.key) {
		return
	}
	p.log.Debug("no handshake on the new path yet, recreating the WireGuard peer")
	if err := p.wgChange(func() error { return p.a.wg.recreatePeer(p.key, overlay, ep, true) }); err != nil {
		p.log.Error("recreate WireGuard peer", "err", err)
	}
}

// handleSignal applies one message from the peer.
func (p *peer) handleSignal(s *control.Signal) {
	if s.Kind != control.SignalInfo && !p.wakeBySignal(s.Kind) { // lazy.go
		return
	}
	if s.Kind == control.SignalInfo && s.Ask && p.a.natProbed() {
		defer p.a.queueNATInfo(p) // after p.mu is released (natepoch.go)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Asleep again since the wake check (idle teardown in between): only
	// the NAT views are kept.
	if p.closed || (p.asleep && s.Kind != control.SignalInfo) {
		return
	}
	l := p.lane(s.Lane)
	if l == nil {
		p.log.Debug("signal for unknown lane", "lane", s.Lane)
		return
	}
	if l == &p.relay {
		p.noteRelayICELocked(s.Kind) // relayshared.go
	}
	switch s.Kind {
	case control.SignalOffer, control.SignalAnswer:
		// What the sender knows now, "not measured" included: the
		// session's order is decided from it (natepoch.go).
		p.peerNAT, p.peerFiltering, p.peerOpenTTL = s.NAT, s.Filtering, s.OpenTTL
		if l == &p.direct {
			p.bd.capable = s.Birthday
			p.sync.capable = s.SyncOpen
		}
	case signalRelayAddr:
		if l == &p.relay {
			p.relayAddrSignalLocked(s) // relayshared.go
		}
		return
	case control.SignalBirthdayAsk, control.SignalBirthdayReady:
		if l == &p.direct {
			p.birthdaySignalLocked(s)
		}
		return
	case control.SignalSyncPing, control.SignalSyncPong, control.SignalSyncFire, control.SignalSyncDone:
		if l == &p.direct {
			l.syncSignalLocked(s)
		}
		return
	case control.SignalInfo:
		p.peerNAT = s.NAT
		if s.Filtering != "" {
			p.peerFiltering, p.peerOpenTTL = s.Filtering, s.OpenTTL
		}
		p.bd.capable = s.Birthday
		p.sync.capable = s.SyncOpen
		if p.asleep {
			return
		}
		p.natViewsChangedLocked()
		p.birthdayTickLocked(time.Now())
		return
	}
	p.log.Debug("signal", "lane", l.label(), "kind", s.Kind, "session", s.Session, "current", l.session, "candidate", s.Candidate)
	l.handleSignalLocked(s)
}

func (p *peer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.direct.closeICELocked()
	p.relay.closeICELocked()
	p.dropSharedChanLocked(true)
	p.dropPunchedLocked("")
}

// punchInfoWait is how long a first direct session waits for both sides'
// NAT views (the filtering probe takes about natFilterTimeout) before it
// starts without them, both sides checking at once.
const punchInfoWait = 2 * time.Second

// orderReadyLocked tells whether the direct lane may start a session:
// both sides know their NAT filtering, so decideOrder can say who sends
// first, or waiting longer is not worth it.
func (p *peer) orderReadyLocked(now time.Time) bool {
	if p.a.natFiltering() != "" && p.peerFiltering != "" {
		return true
	}
	return now.Sub(p.waitFrom) >= punchInfoWait
}

// natViewsChanged starts the first direct session of a controlling side
// that waited for the NAT views (orderReadyLocked). A session under way is
// left alone.
func (p *peer) natViewsChanged() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.natViewsChangedLocked()
}

func (p *peer) natViewsChangedLocked() {
	if p.closed || !p.node.Online || p.asleep {
		return
	}
	if !p.controlling {
		p.direct.releaseOfferLocked(time.Now()) // natepoch.go
		return
	}
	if p.direct.ice != nil {
		return
	}
	p.direct.kickLocked()
}

// peerNATViewLocked is the peer's side of the punch order.
func (p *peer) peerNATViewLocked() natView {
	return natView{Filtering: p.peerFiltering, PortMapped: p.peerNAT == natPortMapped, OpenTTL: p.peerOpenTTL,
		Symmetric: p.peerNAT == natSymmetric, SyncOpen: p.sync.capable}
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package agent

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/agent/datapath"
	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// lane is one ICE session machine of a peer. Every peer has two: the direct
// lane (host, server-reflexive and peer-reflexive candidates over the shared
// socket) and the relay lane (only TURN relay candidates). Both run at once,
// so a relayed path is ready when the direct one dies, and the direct lane
// keeps retrying while traffic is relayed.
//
// Sessions are driven by the controlling side (the node with the smaller
// public key, so both sides agree without talking):
//
//	controlling: start → send offer(session) → gather/trickle candidates
//	             ← answer(session): start checks (Dial)
//	controlled:  ← offer(session): new ICE agent → send answer → gather → Accept
//	             on start-up or failure: send restart, asking for an offer
//
// Every message names its lane and session; anything for another session is
// stale and dropped. A session that fails is replaced with backoff. All
// fields are guarded by the peer's mutex.
type lane struct {
	p    *peer
	name string // "" (direct) or control.LaneRelay

	ice      *ice.Agent
	conn     *ice.Conn
	session  string
	answered bool // controlling: the answer for session has arrived
	started  time.Time
	state    ice.ConnectionState
	retry    backoff
	nextTry  time.Time // earliest (re)start or restart request
	deferred bool      // a restart request waits for the current offer's answer
	failures int       // sessions that ended in failure, for status and metrics

	// The selected pair of the current session.
	selected      bool
	local, remote ice.Candidate
	endpoint      netip.AddrPort
	relayEP       *datapath.Endpoint // relay lane: WireGuard's route through the allocation
	// reading is relayEP for the goroutine reading the allocation, which
	// must not take the peer's lock per packet; reader is the ICE agent it
	// reads for.
	reading atomic.Pointer[datapath.Endpoint]
	reader  *ice.Agent
	// target is the relay the current relay session allocates on.
	target relayTarget

	// The punch order of the current direct session (punchorder.go):
	// while holding, the peer's candidates wait in held; openedSent
	// tells whether the peer was told our first checks have left.
	order      punchOrder
	holding    bool
	held       []ice.Candidate
	openedSent bool
	// openedTo: where a low-TTL opener sent its opening packets.
	openedTo     []netip.AddrPort
	mappingAsked bool // waiting side: our mapping was asked and reported
	// everUp: the current session connected at some point. quietUntil:
	// no new direct session before then (see quietAfterFailureLocked).
	everUp     bool
	quietUntil time.Time
	// selfNAT is what the current session's offer or answer told the
	// peer of our NAT: the direct lane's punch order is decided from it
	// and what the peer's offer or answer said (natepoch.go). heldOffer:
	// a peer's offer kept until our NAT is measured (holdOfferLocked).
	selfNAT   natSignal
	heldOffer *control.Signal
	// heldCands: the held offer's candidates, trickled before our answer
	// (the peer sends each once).
	heldCands []*control.Signal
	// peerStarts charges the sessions the peer makes us start (its offers,
	// or its restart requests when we are controlling): each costs an ICE
	// agent, sockets and, on the relay lane, a TURN allocation.
	peerStarts ratelimit.Bucket
	// remoteCands counts the current session's remote candidates;
	// foreign holds those nothing vouches for (candguard.go).
	remoteCands int
	foreign     []netip.AddrPort
	// sock is the punched lane's socket (birthdaypath.go).
	sock *datapath.PunchSocket
	// shared: the relay lane's path is a channel on the agent's shared
	// relay client (relayshared.go), up while the channel is bound.
	shared bool
	// consent checks the direct session's selected pair (consentrun.go);
	// checkingAt is when the session began its checks, for
	// iceCheckingTimeout.
	consent    *consentRunner
	checkingAt time.Time
}

// peerStartRate bounds the sessions a peer can make a lane start: a few at
// once (both sides starting together, a lost answer), then one per two
// seconds. An honest peer offers once per answerTimeout at most; a flood of
// 3,000 offers made an agent build 3,000 ICE agents and allocations.
var peerStartRate = ratelimit.Rate{Burst: 3, PerSec: 0.5}

// maxRemoteCandidates bounds one session's remote candidates; a real peer
// has a handful (host, server-reflexive, relay, port-mapped).
const maxRemoteCandidates = 64

// allowPeerStartLocked charges a session start asked for by the peer and
// tells whether it may happen now; the excess is ignored (the peer's own
// timers ask again).
func (l *lane) allowPeerStartLocked(kind string) bool {
	if ok, _ := peerStartRate.Take(&l.peerStarts, time.Now()); ok {
		return true
	}
	l.p.a.logLimit.Log(l.p.log, slog.LevelInfo, "peer asks for new ICE sessions too often; ignoring", "lane", l.label(), "kind", kind)
	return false
}

func (l *lane) relay() bool { return l.name == control.LaneRelay }

// label names the lane in logs.
func (l *lane) label() string {
	if l.relay() {
		return "relay"
	}
	return "direct"
}

// up tells whether the lane has a working selected pair.
func (l *lane) up() bool {
	if l.name == lanePunched || l.shared {
		return l.selected
	}
	return l.ice != nil && l.selected && (l.state == ice.ConnectionStateConnected || l.state == ice.ConnectionStateCompleted)
}

// enabled tells whether the lane can run now: the relay lane needs a relay.
func (l *lane) enabled() bool {
	if l.relay() && l.p.a.sharedRelayOn() && !l.p.shared.iceWanted {
		return false // the shared relay client serves it (relayshared.go)
	}
	return !l.relay() || len(l.p.a.relayChoice()) > 0
}

// kickLocked starts negotiating now if the lane is not already up.
func (l *lane) kickLocked() {
	if !l.enabled() || !l.wantedLocked(time.Now()) || l.up() || l.quietLocked(time.Now()) {
		return
	}
	l.retry.reset()
	l.nextTry = time.Time{}
	if l.p.controlling {
		if l.ice == nil && !l.orderReadyLocked(time.Now()) {
			return // the tick or the peer's NAT info starts it
		}
		l.startLocked()
	} else {
		l.requestRestartLocked()
	}
}

// tickLocked repairs whatever is stuck; called every second.
func (l *lane) tickLocked(now time.Time) {
	l.checkingTimeoutLocked(now)
	if !l.enabled() || !l.wantedLocked(now) || now.Before(l.nextTry) {
		return
	}
	if l.p.controlling {
		switch {
		case l.ice == nil && !l.orderReadyLocked(now):
		case l.ice == nil:
			l.startLocked()
		case l.deferred && !l.answered:
			l.startLocked()
		case !l.answered && now.Sub(l.started) > answerTimeout:
			l.startLocked()
		case l.state == ice.ConnectionStateFailed:
			l.startLocked()
		}
		l.deferred = false
		return
	}
	if l.heldOffer == nil && (l.ice == nil || l.state == ice.ConnectionStateFailed) {
		l.requestRestartLocked()
	}
}

// wantedLocked tells whether the lane should run on our initiative: an
// on-demand peer's relay lane only when the direct one does not come up
// (lazy.go).
func (l *lane) wantedLocked(now time.Time) bool {
	return !l.relay() || l.p.relayWantedLocked(now)
}

// orderReadyLocked tells whether a first session may start: the relay lane
// always, the direct lane once the punch order can be decided.
func (l *lane) orderReadyLocked(now time.Time) bool {
	return l.relay() || l.p.orderReadyLocked(now)
}

func (l *lane) signal(s control.Signal) {
	s.To = l.p.id
	s.Lane = l.name
	if s.Kind == control.SignalOffer || s.Kind == control.SignalAnswer {
		l.selfNAT.fill(&s)
	}
	l.p.a.sendSignal(s)
}

func (l *lane) requestRestartLocked() {
	l.p.a.countICERestart()
	l.nextTry = time.Now().Add(l.retry.next())
	l.signal(control.Signal{Kind: control.SignalRestart})
}

// startLocked replaces the session with a new one and offers it, within
// the agent's session budget (pace.go).
func (l *lane) startLocked() {
	if ok, retry := l.p.takeSessionLocked(time.Now()); !ok {
		l.nextTry = retry
		return
	}
	if l.ice != nil {
		l.p.a.countICERestart()
	}
	agent, err := l.newICELocked(newSessionID())
	if err != nil {
		l.p.log.Error("create ICE agent", "lane", l.label(), "err", err)
		l.nextTry = time.Now().Add(l.retry.next())
		return
	}
	l.answered = false
	l.nextTry = time.Now().Add(l.retry.next())
	ufrag, pwd, _ := agent.GetLocalUserCredentials()
	l.signal(control.Signal{Kind: control.SignalOffer, Session: l.session, Ufrag: ufrag, Pwd: pwd})
	if err := agent.GatherCandidates(); err != nil {
		l.p.log.Warn("gather candidates", "lane", l.label(), "err", err)
	}
	l.offerPortmapLocked() // portmap.go
}

// newICELocked closes the current ICE agent and makes a fresh one for session.
func (l *lane) newICELocked(session string) (*ice.Agent, error) {
	l.closeICELocked()
	var agent *ice.Agent
	var err error
	if l.relay() {
		agent, l.target, err = l.p.a.newRelayICEAgent()
	} else {
		agent, err = l.p.a.newICEAgent()
	}
	if err != nil {
		return nil, err
	}
	l.ice = agent
	l.session = session
	l.remoteCands, l.foreign = 0, nil
	l.started = time.Now()
	l.state = ice.ConnectionStateNew
	l.everUp = false
	l.selfNAT = l.p.a.natSignalNow()
	if l.p.controlling {
		// Decided when the answer says what the peer knows of its NAT.
		l.resetOrderLocked()
	} else {
		l.setOrderLocked(agent)
	}

	p := l.p
	_ = agent.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			return
		}
		p.mu.Lock()
		current := l.ice == agent
		p.mu.Unlock()
		if current {
			l.signal(control.Signal{Kind: control.SignalCandidate, Session: session, Candidate: c.Marshal()})
		}
	})
	_ = agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		p.onState(l, agent, s)
	})
	_ = agent.OnSelectedCandidatePairChange(func(local, remote ice.Candidate) {
		p.onSelected(l, agent, local, remote)
	})
	return agent, nil
}

func (l *lane) closeICELocked() {
	if l.ice == nil {
		return
	}
	old := l.ice
	l.stopConsentLocked()
	l.ice = nil
	l.conn = nil
	l.session = ""
	l.state = ice.ConnectionStateClosed
	l.selected = false
	if l.relayEP != nil {
		l.p.a.bind.Unroute(l.relayEP)
		l.relayEP = nil
	}
	l.reading.Store(nil)
	l.reader = nil
	// Closing waits for ICE's goroutines; never hold our lock for that.
	go old.Close()
}

// handleSignalLocked applies one message of this lane from the peer.
func (l *lane) handleSignalLocked(s *control.Signal) {
	switch s.Kind {
	case control.SignalRestart:
		if !l.p.controlling || !l.enabled() {
			return
		}
		if l.ice == nil && !l.orderReadyLocked(time.Now()) {
			return // starts once the punch order can be decided
		}
		if l.quietLocked(time.Now()) {
			return // the tick starts it when the stale entries are gone
		}
		if !l.answered && time.Since(l.started) < restartHold && l.ice != nil {
			// Our offer may be in flight to the peer's new instance.
			l.deferred = true
			l.nextTry = l.started.Add(restartHold)
			return
		}
		if !l.allowPeerStartLocked(s.Kind) {
			return
		}
		l.retry.reset()
		l.startLocked()
	case control.SignalOffer:
		if l.p.controlling {
			return
		}
		if !l.enabled() {
			l.p.log.Debug("relay offer ignored: no relay available here")
			return
		}
		if l.ice != nil && s.Session == l.session {
			return // a repeat of the offer we answered
		}
		if l.holdOfferLocked(s) { // natepoch.go
			return
		}
		if !l.allowPeerStartLocked(s.Kind) {
			return
		}
		if ok, retry := l.p.takeSessionLocked(time.Now()); !ok {
			l.nextTry = retry // then a restart request asks for a new offer
			return
		}
		agent, err := l.newICELocked(s.Session)
		if err != nil {
			l.p.log.Error("create ICE agent", "lane", l.label(), "err", err)
			return
		}
		ufrag, pwd, _ := agent.GetLocalUserCredentials()
		l.signal(control.Signal{Kind: control.SignalAnswer, Session: s.Session, Ufrag: ufrag, Pwd: pwd})
		c, err := agent.StartAccept(s.Ufrag, s.Pwd)
		if err != nil {
			l.p.log.Warn("start ICE checks", "lane", l.label(), "err", err)
		}
		l.conn = c
		l.p.prepareWGLocked() // lazyhandshake.go
		if err := agent.GatherCandidates(); err != nil {
			l.p.log.Warn("gather candidates", "lane", l.label(), "err", err)
		}
		l.offerPortmapLocked() // portmap.go
	case control.SignalAnswer:
		if !l.p.controlling || s.Session != l.session || l.answered || l.ice == nil {
			return
		}
		l.answered = true
		if !l.relay() {
			l.setOrderLocked(l.ice) // from our offer's and this answer's views
		}
		c, err := l.ice.StartDial(s.Ufrag, s.Pwd)
		if err != nil {
			l.p.log.Warn("start ICE checks", "lane", l.label(), "err", err)
		}
		l.conn = c
		if l.order == orderSync {
			l.syncPingsLocked() // syncopen.go
		}
	case control.SignalCandidate:
		if l.holdCandidateLocked(s) { // natepoch.go
			return
		}
		if s.Session != l.session || l.ice == nil || l.remoteCands >= maxRemoteCandidates {
			return
		}
		l.remoteCands++
		c, err := ice.UnmarshalCandidate(s.Candidate)
		if err != nil {
			l.p.log.Debug("bad remote candidate", "err", err)
			return
		}
		if !l.admitCandidateLocked(c) {
			return
		}
		if !l.relay() {
			c = preferIPv6(c) // ice6.go
		}
		if c.Type() == ice.CandidateTypeServerReflexive && !l.relay() {
			if ip, err := netip.ParseAddr(c.Address()); err == nil {
				l.p.notePublicLocked(netip.AddrPortFrom(ip, uint16(c.Port())))
				l.p.birthdayTickLocked(time.Now())
			}
		}
		l.addRemoteLocked(c)
	case control.SignalOpened:
		if s.Session == l.session {
			l.onOpenedLocked()
		}
	case control.SignalMapping:
		if s.Session == l.session && l.order == orderOpenLow {
			if ap, err := netip.ParseAddrPort(s.Candidate); err == nil && ap.Addr().Is4() {
				l.peerMappedLocked(ap)
			}
		}
	}
}

// via describes how the lane's path goes, for logs.
func (l *lane) via() string {
	if !l.relay() {
		return "direct"
	}
	return l.target.URL + " (" + l.target.Transport + ")"
}

// checkingTimeoutLocked fails a direct session still checking
// iceCheckingTimeout after its checks began: its ICE agent has no failed
// timeout of its own (newICEAgent), which would also end it once
// connected.
func (l *lane) checkingTimeoutLocked(now time.Time) {
	if l.relay() || l.ice == nil || l.state != ice.ConnectionStateChecking || l.checkingAt.IsZero() ||
		now.Sub(l.checkingAt) < iceCheckingTimeout {
		return
	}
	l.checkingAt = time.Time{}
	if apply := l.p.laneFailedLocked(l, "direct lane: no pair answered"); apply != nil {
		go apply()
	}
}

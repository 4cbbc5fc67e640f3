package agent

import (
	"net/netip"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
)

const (
	// punchOpenedDelay: the side that sends first tells the peer its
	// checks have left this long after it has the peer's first candidate
	// (a check goes every iceCheckInterval).
	punchOpenedDelay = 3 * iceCheckInterval
	// punchHoldMax bounds how long a side holds its checks back when the
	// peer's SignalOpened does not come (an older peer, a lost message).
	punchHoldMax = time.Second
	// staleExpiry is how long both sides keep quiet after a direct session
	// that never connected: Linux forgets an unreplied UDP flow after 30 s
	// (nf_conntrack_udp_timeout), so the stale entries our checks left on a
	// router without an input firewall are gone when the next session
	// starts. Retrying sooner would refresh them for good.
	staleExpiry = 32 * time.Second
)

// quietAfterFailureLocked holds the direct lane back for staleExpiry
// after a session that never connected, while no direct path has worked
// since the peer came online. A path that worked and died (a network
// change, a firewall) retries on the usual backoff instead.
func (l *lane) quietAfterFailureLocked() {
	if l.relay() || l.everUp || l.p.directAfter != 0 {
		return
	}
	l.quietUntil = time.Now().Add(staleExpiry)
	l.nextTry = l.quietUntil
	l.p.log.Info("direct session never connected; quiet until stale NAT entries expire", "for", staleExpiry.String())
}

// quietLocked tells whether the direct lane must not start a session yet.
func (l *lane) quietLocked(now time.Time) bool {
	return !l.relay() && now.Before(l.quietUntil)
}

// setOrderLocked decides the punch order of the direct lane's new session
// (agent is its ICE agent) and, when we hold back, arms the release.
func (l *lane) setOrderLocked(agent *ice.Agent) {
	l.order, l.holding, l.held, l.openedSent = orderTogether, false, nil, false
	if l.relay() {
		return
	}
	p := l.p
	l.order = decideOrder(p.a.selfNATView(), p.peerNATViewLocked(), p.controlling)
	if l.order != orderTogether {
		p.log.Info("punch order", "order", l.order.String(), "self", p.a.natFiltering(), "peer", p.peerFiltering)
	}
	if l.order != orderWait && l.order != orderOpenLow {
		return
	}
	l.holding = true
	hold := punchHoldMax
	if l.order == orderOpenLow {
		// Our checks must not reach the peer's router before its own
		// checks have opened it: wait longer for its word.
		hold = 2 * punchHoldMax
	}
	time.AfterFunc(hold, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if l.ice == agent && l.holding {
			l.releaseLocked("no word from the peer")
		}
	})
}

// addRemoteLocked hands a remote candidate to ICE, or keeps it while we
// hold back. The side that sends first tells the peer once its first
// checks are out.
func (l *lane) addRemoteLocked(c ice.Candidate) {
	if l.holding {
		l.held = append(l.held, c)
		if l.order == orderOpenLow && c.Type() == ice.CandidateTypeServerReflexive {
			l.openLowLocked(c)
		}
		return
	}
	if err := l.ice.AddRemoteCandidate(c); err != nil {
		l.p.log.Debug("add remote candidate", "err", err)
		return
	}
	// The side that sends first, and a waiting side whose peer opened
	// with low TTL, tell the peer once checks to its public address run.
	public := c.Type() == ice.CandidateTypeServerReflexive || c.Type() == ice.CandidateTypePeerReflexive
	if (l.order == orderFirst || l.order == orderWait) && public {
		l.tellOpenedLocked()
	}
}

// tellOpenedLocked tells the peer, punchOpenedDelay from now, that our
// first packets have left.
func (l *lane) tellOpenedLocked() {
	if l.openedSent {
		return
	}
	l.openedSent = true
	p, agent, session := l.p, l.ice, l.session
	time.AfterFunc(punchOpenedDelay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if l.ice == agent {
			l.signal(control.Signal{Kind: control.SignalOpened, Session: session})
		}
	})
}

// releaseLocked stops holding back: the held candidates go to ICE, whose
// checks start now.
func (l *lane) releaseLocked(why string) {
	l.holding = false
	held := l.held
	l.held = nil
	l.p.log.Debug("punch: starting checks", "why", why, "candidates", len(held))
	for _, c := range held {
		l.addRemoteLocked(c)
	}
}

// openLowBurst is how many low-TTL opening packets go to each of the
// peer's public candidates, openLowGap apart.
const (
	openLowBurst = 3
	openLowGap   = 20 * time.Millisecond
)

// openLowLocked opens our NAT toward the peer's public candidate c with
// low-TTL packets from the shared socket, then tells the peer.
func (l *lane) openLowLocked(c ice.Candidate) {
	ip, err := netip.ParseAddr(c.Address())
	if err != nil {
		return
	}
	to := netip.AddrPortFrom(ip.Unmap(), uint16(c.Port()))
	ttl := l.p.a.natOpenTTL()
	bind, log := l.p.a.bind, l.p.log
	go func() {
		for i := range openLowBurst {
			if i > 0 {
				time.Sleep(openLowGap)
			}
			if err := bind.sendLowTTL(to, ttl); err != nil {
				log.Warn("low-TTL opening packet not sent", "to", to.String(), "err", err)
				return
			}
		}
	}()
	l.p.log.Info("punch: opening our NAT with low-TTL packets", "to", to.String(), "ttl", ttl)
	l.tellOpenedLocked()
}

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
	l.resetOrderLocked()
	if l.relay() {
		return
	}
	p := l.p
	// Our view as our offer or answer told it, the peer's as its own
	// did: both sides decide from the same two (natepoch.go).
	l.order = decideOrder(l.selfNAT.view(syncOpenEnabled), p.peerNATViewLocked(), p.controlling)
	if l.order == orderSync && !l.syncBeginLocked() {
		l.order = orderTogether
	}
	if l.order != orderTogether {
		p.log.Info("punch order", "order", l.order.String(), "self", p.a.natFiltering(), "peer", p.peerFiltering)
	}
	if l.order == orderTogether {
		return
	}
	// Every side of an ordered session holds its checks back: the waiting
	// side until the opener's filter is open, the opener until the
	// waiting side's checks have left - ours must not reach the peer's
	// router before those have opened it, or they leave a stale entry
	// there that moves the peer's mapping (for every new flow of that
	// socket: Linux reuses a source's newest mapping).
	l.holding = true
	hold := punchHoldMax
	switch l.order {
	case orderWait:
	case orderSync:
		hold = syncHoldMax
	default:
		hold = 2 * punchHoldMax
	}
	time.AfterFunc(hold, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if l.ice != agent || !l.holding {
			return
		}
		if l.order == orderSync && p.sync.planned {
			return // the open releases them
		}
		l.releaseLocked("no word from the peer")
	})
}

// resetOrderLocked clears the punch order state for a new session.
func (l *lane) resetOrderLocked() {
	l.order, l.holding, l.held, l.openedSent = orderTogether, false, nil, false
	l.openedTo, l.mappingAsked = nil, false
}

// addRemoteLocked hands a remote candidate to ICE, or keeps it while we
// hold back. The side that sends first tells the peer once its first
// checks are out.
func (l *lane) addRemoteLocked(c ice.Candidate) {
	// The order is about IPv4 NAT mappings; IPv6 has none to protect.
	if l.holding && !ipv6Candidate(c) {
		l.held = append(l.held, c)
		if c.Type() == ice.CandidateTypeServerReflexive {
			switch l.order {
			case orderOpenLow:
				l.openLowLocked(c)
			case orderFirst:
				l.openFilterLocked(c)
			case orderSync:
				l.syncPlanLocked()
			}
		}
		return
	}
	if err := l.ice.AddRemoteCandidate(c); err != nil {
		l.p.log.Debug("add remote candidate", "err", err)
		return
	}
	// The waiting side tells the opener once checks to its public
	// address run.
	public := c.Type() == ice.CandidateTypeServerReflexive || c.Type() == ice.CandidateTypePeerReflexive
	if l.order == orderWait && public && !ipv6Candidate(c) {
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
	if l.p.birthdaySprayLocked() {
		// Our full-TTL checks cannot join a symmetric NAT to this peer,
		// and on a router without an input firewall each leaves an entry
		// that moves the peer's mapping away from where our birthday
		// sockets opened (birthday.go): keep them back for good.
		l.p.log.Debug("punch: direct checks held back; the birthday punch joins this pair")
		return
	}
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

// decoyPort is where a filter-opening packet goes on the peer's public
// address: the discard port, which no NAT hands out as a mapping, so the
// entry the packet may leave on the peer's router never clashes with the
// peer's own flows.
const decoyPort = 9

// openFilterLocked opens an address-dependent filter (restricted cone)
// for the peer's whole address, without touching the peer's mapping:
// packets to the peer's address at decoyPort. A port mapping needs
// nothing. A filter measured endpoint-independent gets them too: a
// restricted cone that opens per host rather than per mapping reads as
// one when the probe's server address was contacted from another socket
// (measured in the lab: the agent's two probes run at once). Then it
// tells the peer to start.
func (l *lane) openFilterLocked(c ice.Candidate) {
	if l.openedSent {
		return
	}
	if !l.p.a.selfNATView().PortMapped {
		ip, err := netip.ParseAddr(c.Address())
		if err != nil {
			return
		}
		to := netip.AddrPortFrom(ip.Unmap(), decoyPort)
		l.burstLocked(to, 64)
		l.p.log.Info("punch: opening our filter for the peer's address", "to", to.String())
	}
	l.tellOpenedLocked()
}

// burstLocked sends openLowBurst opening packets to to with the given TTL
// from the shared socket.
func (l *lane) burstLocked(to netip.AddrPort, ttl int) {
	bind, log := l.p.a.bind, l.p.log
	go func() {
		for i := range openLowBurst {
			if i > 0 {
				time.Sleep(openLowGap)
			}
			if err := bind.sendTTL(to, ttl); err != nil {
				log.Warn("opening packet not sent", "to", to.String(), "err", err)
				return
			}
		}
	}()
}

// openLowLocked opens our NAT toward the peer's public candidate c with
// low-TTL packets from the shared socket, then tells the peer.
func (l *lane) openLowLocked(c ice.Candidate) {
	ip, err := netip.ParseAddr(c.Address())
	if err != nil {
		return
	}
	l.openLowToLocked(netip.AddrPortFrom(ip.Unmap(), uint16(c.Port())))
	l.tellOpenedLocked()
}

// sameHostLocked tells whether ap is on the public address we opened
// toward: a peer's mapping report may only move the port, so no member
// can point our opening packets at a third party.
func (l *lane) sameHostLocked(ap netip.AddrPort) bool {
	return len(l.openedTo) > 0 && l.openedTo[0].Addr() == ap.Addr()
}

// openLowToLocked sends the low-TTL burst to one address, once.
func (l *lane) openLowToLocked(to netip.AddrPort) {
	for _, o := range l.openedTo {
		if o == to {
			return
		}
	}
	l.openedTo = append(l.openedTo, to)
	ttl := l.p.a.natOpenTTL()
	l.burstLocked(to, ttl)
	l.p.log.Info("punch: opening our NAT with low-TTL packets", "to", to.String(), "ttl", ttl)
}

// peerMappedLocked takes the peer's report of where its checks will come
// from: we open toward it too, and tell the peer at once.
func (l *lane) peerMappedLocked(ap netip.AddrPort) {
	if !l.sameHostLocked(ap) {
		l.p.log.Debug("mapping report for another address ignored", "mapped", ap.String())
		return
	}
	l.openLowToLocked(ap)
	l.signal(control.Signal{Kind: control.SignalOpened, Session: l.session})
}

// onOpenedLocked handles the peer's SignalOpened while we hold back. A
// side waiting for a low-TTL opener first reports where its new flows
// leave from now (the opener opened toward the STUN-seen port, which may
// have moved) and starts on the opener's next word.
func (l *lane) onOpenedLocked() {
	if !l.holding {
		return
	}
	if l.order == orderWait && l.p.peerOpenTTL > 0 && !l.mappingAsked {
		l.mappingAsked = true
		go l.reportMapping(l.ice, l.session)
		return
	}
	l.releaseLocked("the peer's first checks left")
}

// reportMapping tells a low-TTL opener where our new flows leave from
// now, asked from the shared socket (mapquery.go).
func (l *lane) reportMapping(agent *ice.Agent, session string) {
	a := l.p.a
	dest, ok := a.freshSTUN()
	if !ok {
		l.p.mu.Lock()
		defer l.p.mu.Unlock()
		if l.ice == agent && l.holding {
			l.releaseLocked("no STUN address to ask for the mapping")
		}
		return
	}
	m, err := a.bind.queryMapping(dest)
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if err != nil {
		l.p.log.Debug("mapping query", "to", dest.String(), "err", err)
		if l.ice == agent && l.holding {
			l.releaseLocked("no mapping to report")
		}
		return
	}
	if l.ice == agent {
		l.p.log.Info("punch: our new flows leave from", "mapped", m.String())
		l.signal(control.Signal{Kind: control.SignalMapping, Session: session, Candidate: m.String()})
	}
}

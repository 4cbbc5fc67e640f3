package agent

import (
	"net/netip"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/internal/metrics"
)

// consentRunner is the running consent machine of one direct session
// (consent.go): a goroutine that sleeps until the next check is due, an
// answer arrives, or the data path says an idle tunnel is being used.
type consentRunner struct {
	agent *ice.Agent
	stop  chan struct{}
}

// startConsentLocked starts checking the direct lane's session once it
// is up, unless that session is checked already.
func (l *lane) startConsentLocked() {
	if l.relay() || l.name == lanePunched || l.ice == nil || !l.up() {
		return
	}
	if l.consent != nil && l.consent.agent == l.ice {
		return
	}
	l.stopConsentLocked()
	r := &consentRunner{agent: l.ice, stop: make(chan struct{})}
	l.consent = r
	go l.p.consentRun(l, r)
}

func (l *lane) stopConsentLocked() {
	if l.consent != nil {
		close(l.consent.stop)
		l.consent = nil
	}
	l.p.directIdle.Store(false)
}

// consentUse is the data path's note that a packet to or from the peer
// went through the TUN: when the direct path is idle, its check is due
// now. Cheap when it is not (one atomic load).
func (p *peer) consentUse() {
	if p.directIdle.Load() && p.directIdle.CompareAndSwap(true, false) {
		select {
		case p.consentKick <- struct{}{}:
		default:
		}
	}
}

// consentRun drives one session's consent machine until the session is
// replaced or closed, or its consent fails.
func (p *peer) consentRun(l *lane, r *consentRunner) {
	creds, err := sessionCreds(r.agent)
	if err != nil {
		p.log.Debug("no consent checks for the direct session", "err", err)
		return
	}
	answers := make(chan struct{}, 1)
	var sent [][stun.TransactionIDSize]byte // checks in flight, forgotten on exit
	defer func() { p.a.bind.consents.forget(sent) }()

	p.mu.Lock()
	c := newConsent(time.Now(), p.lastUsed)
	p.mu.Unlock()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		answered, kicked := false, false
		select {
		case <-r.stop:
			return
		case <-answers:
			answered = true
		case <-p.consentKick:
			kicked = true
		case <-timer.C:
		}
		now := time.Now()
		p.mu.Lock()
		if l.consent != r || l.ice != r.agent || p.closed {
			p.mu.Unlock()
			return
		}
		if kicked {
			c.used(now)
		}
		c.used(p.lastUsed)
		var v consentVerdict
		if answered {
			v = c.answered()
		}
		send, sv, next := c.step(now)
		if sv != consentSame {
			v = sv
		}
		ep, prio := l.endpoint, uint32(0)
		if l.local != nil {
			prio = l.local.Priority()
		}
		apply := p.consentVerdictLocked(l, v)
		p.directIdle.Store(v != consentFailed && !c.active(now))
		p.mu.Unlock()
		if apply != nil {
			apply()
		}
		if v == consentFailed {
			return
		}
		if send && ep.IsValid() {
			if id, ok := p.sendConsent(creds, prio, ep, answers); ok {
				if len(sent) >= 8 {
					sent = sent[1:]
				}
				sent = append(sent, id)
			}
		}
		timer.Reset(time.Until(next))
	}
}

// consentVerdictLocked applies a verdict to the lane and returns the
// WireGuard change to make after the lock (reconsiderLocked).
func (p *peer) consentVerdictLocked(l *lane, v consentVerdict) func() {
	switch v {
	case consentLost:
		l.state = ice.ConnectionStateDisconnected
		p.log.Debug("ICE state", "lane", l.label(), "state", "disconnected (consent checks unanswered)", "session", l.session)
		return p.reconsiderLocked("direct lane: consent checks unanswered for 3 s")
	case consentBack:
		l.state = ice.ConnectionStateConnected
		p.log.Debug("ICE state", "lane", l.label(), "state", "connected (consent checks answered again)", "session", l.session)
		return p.reconsiderLocked("direct lane answers again")
	case consentFailed:
		l.consent = nil
		return p.laneFailedLocked(l, "direct lane: consent lost for 10 s")
	}
	return nil
}

// sendConsent sends one check to ep and registers its answer's waiter.
func (p *peer) sendConsent(c consentCreds, prio uint32, ep netip.AddrPort, answers chan<- struct{}) ([stun.TransactionIDSize]byte, bool) {
	m, err := consentRequest(c, prio)
	if err != nil {
		p.log.Debug("build consent check", "err", err)
		return [stun.TransactionIDSize]byte{}, false
	}
	p.a.bind.consents.add(m.TransactionID, consentWait{to: ep, pwd: []byte(c.remotePwd), sent: time.Now(), done: answers})
	p.a.consentChecks.Add(1)
	if err := p.a.bind.SendTo(m.Raw, ep); err != nil {
		p.log.Debug("send consent check", "err", err)
	}
	return m.TransactionID, true
}

// sessionCreds reads a session's credentials from its ICE agent.
func sessionCreds(a *ice.Agent) (consentCreds, error) {
	lu, _, err := a.GetLocalUserCredentials()
	if err != nil {
		return consentCreds{}, err
	}
	ru, rp, err := a.GetRemoteUserCredentials()
	if err != nil {
		return consentCreds{}, err
	}
	return consentCreds{localUfrag: lu, remoteUfrag: ru, remotePwd: rp}, nil
}

// registerConsentMetrics adds the consent checks' counter to the agent's
// metrics.
func (a *Agent) registerConsentMetrics() {
	a.metrics.reg.CounterFunc("meshvpn_agent_consent_checks_total",
		"Consent checks (STUN binding requests) the agent sent on direct paths.", nil,
		func() []metrics.Sample { return []metrics.Sample{{Value: float64(a.consentChecks.Load())}} })
}

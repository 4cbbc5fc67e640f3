package agent

import "time"

// Consent on the direct path (issue 16). pion's keepalives checked every
// selected pair once a second from both sides, whatever the tunnel did:
// with 100 idle tunnels that was 400 STUN messages a second and 3 % of a
// core. The direct lane's ICE agents now run with no keepalive and no
// disconnected/failed timers (iceOptions), and consentState decides when
// the agent checks the selected pair itself (consentrun.go, consentwire.go), the way
// Tailscale treats idle paths:
//
//   - while the tunnel carries data (a packet through the TUN either way
//     in the last consentActiveFor), every consentFast, so a path that
//     dies under traffic is noticed in consentLostAfter, as before;
//   - while it is idle, every consentIdle: enough to notice a dead path
//     eventually (WireGuard's persistent keepalives keep the NAT entries);
//   - when a packet is about to use an idle path, at once (consentKick
//     from the TUN reader), and the path is lost if that check is not
//     answered in consentLostAfter;
//   - an unanswered check is repeated every consentFast until answered
//     or lost, and a lost path every consentFast until it answers again
//     (back up) or consentFailAfter passes (the session failed and is
//     replaced, as pion's failed timeout did).
//
// Only a verified answer counts: a Binding success response to one of
// our own checks (its transaction ID), from the address checked, with
// MESSAGE-INTEGRITY under the peer's password. WireGuard keepalives,
// handshakes and the peer's own checks do not make a tunnel active, and
// nothing a stranger can send from the peer's address keeps a dead path
// alive. Checks never go out more often than one per consentFast, what
// ever the data path or the peer does.
//
// A peer running an older agent keeps checking every second; pion
// answers those as always, and our answers keep its path alive.
const (
	consentFast      = 1 * time.Second
	consentIdle      = 20 * time.Second
	consentActiveFor = 5 * time.Second
	consentLostAfter = 3 * time.Second // iceDisconnected's value
	consentFailAfter = 10 * time.Second
)

// consentVerdict is a change consentState asks of the lane.
type consentVerdict int

const (
	consentSame   consentVerdict = iota
	consentLost                  // checks unanswered for consentLostAfter: the lane is down
	consentBack                  // a lost path answered again: the lane is up
	consentFailed                // lost for consentFailAfter: the session failed
)

// consentState is one direct session's consent machine; it holds no lock
// and reads no clock (consentRun drives it).
type consentState struct {
	lastSent time.Time
	// waitFrom: when the first check unanswered since the last answer
	// went out; zero when none is outstanding.
	waitFrom time.Time
	lost     time.Time // when the path was declared lost; zero while it answers
	dataAt   time.Time // the last data through the tunnel, as far as known
}

// newConsent starts the machine on a pair ICE has just validated: the
// first check is due one interval later.
func newConsent(now, dataAt time.Time) consentState {
	return consentState{lastSent: now, dataAt: dataAt}
}

// active tells whether the tunnel carried data recently.
func (c *consentState) active(now time.Time) bool {
	return !c.dataAt.IsZero() && now.Sub(c.dataAt) < consentActiveFor
}

// used records data through the tunnel at t.
func (c *consentState) used(t time.Time) {
	if t.After(c.dataAt) {
		c.dataAt = t
	}
}

// interval is how long after the last check the next one is due.
func (c *consentState) interval(now time.Time) time.Duration {
	if c.active(now) || !c.waitFrom.IsZero() || !c.lost.IsZero() {
		return consentFast
	}
	return consentIdle
}

// step advances the machine to now: whether to send a check now, a
// verdict, and when to step again at the latest.
func (c *consentState) step(now time.Time) (send bool, v consentVerdict, next time.Time) {
	switch {
	case !c.lost.IsZero() && now.Sub(c.lost) >= consentFailAfter:
		return false, consentFailed, time.Time{}
	case c.lost.IsZero() && !c.waitFrom.IsZero() && now.Sub(c.waitFrom) >= consentLostAfter:
		c.lost = now
		v = consentLost
	}
	if now.Sub(c.lastSent) >= c.interval(now) {
		send = true
		c.lastSent = now
		if c.waitFrom.IsZero() {
			c.waitFrom = now
		}
	}
	next = c.lastSent.Add(c.interval(now))
	switch {
	case !c.lost.IsZero():
		next = earlier(next, c.lost.Add(consentFailAfter))
	case !c.waitFrom.IsZero():
		next = earlier(next, c.waitFrom.Add(consentLostAfter))
	}
	return send, v, next
}

// answered records a verified answer at now.
func (c *consentState) answered() consentVerdict {
	c.waitFrom = time.Time{}
	if !c.lost.IsZero() {
		c.lost = time.Time{}
		return consentBack
	}
	return consentSame
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

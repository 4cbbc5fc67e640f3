package agent

import (
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// A peer's NAT views belong to the run of the peer that sent them.
//
// When one agent restarts, its peers used to keep the views of its last
// run and decide the punch order at once, while the new run had not
// measured its NAT yet and checked at once: on a router that accepts
// input its early checks left stale entries, and the pair waited out
// staleExpiry (46 s to direct in the lab, e2e TestRestartOnePunch). Now:
//
//   - a peer that goes offline or comes back loses the views it told us
//     (forgetPeerNATLocked), and we tell it ours again (it lost them all);
//   - the info we then send asks for the peer's views (Signal.Ask): a
//     peer that only reconnected to the coordinator, not restarted, does
//     not announce them again by itself;
//   - an offer or answer says what its sender knows of its NAT now,
//     "unknown" included, and each session's order is decided from the
//     views its offer and answer carried (lane.selfNAT), so both sides
//     decide from the same two;
//   - a controlled side not done measuring holds a peer's offer until
//     it is, or punchInfoWait passed (holdOfferLocked), as the
//     controlling side holds its offer (orderReadyLocked).

// natSignal is what an offer, answer or info signal says of the sender's
// NAT.
type natSignal struct {
	label, filtering string
	openTTL          int
}

// natSignalNow is what our signals say of our NAT now.
func (a *Agent) natSignalNow() natSignal {
	label := a.natLabel()
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return natSignal{label: label, filtering: a.nat.filtering, openTTL: a.nat.openTTL}
}

// view is the punch order's view of a side that sent s: built the same
// way on both ends (peerNATViewLocked), so both decide from the same.
func (s natSignal) view(syncOpen bool) natView {
	return natView{Filtering: s.filtering, PortMapped: s.label == natPortMapped, OpenTTL: s.openTTL,
		Symmetric: s.label == natSymmetric, SyncOpen: syncOpen}
}

// fill puts s into an offer, answer or info signal.
func (s natSignal) fill(sig *control.Signal) {
	sig.NAT, sig.Filtering, sig.OpenTTL = s.label, s.filtering, s.openTTL
	sig.Birthday, sig.SyncOpen = true, syncOpenEnabled
}

// natProbed tells whether our NAT probe has a result to tell peers.
func (a *Agent) natProbed() bool {
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return a.nat.probed
}

// forgetPeerNATLocked drops the views the peer told us: it went offline
// or came back, perhaps as a new run that has not measured its NAT yet.
func (p *peer) forgetPeerNATLocked() {
	p.peerNAT, p.peerFiltering, p.peerOpenTTL = "", "", 0
	p.sync.capable, p.bd.capable = false, false
	p.direct.heldOffer, p.direct.heldCands = nil, nil // of the run that went away
}

// selfReadyLocked tells whether our side of the punch order is known, or
// waiting for it is no longer worth it.
func (p *peer) selfReadyLocked(now time.Time) bool {
	return p.a.natFiltering() != "" || now.Sub(p.waitFrom) >= punchInfoWait
}

// holdOfferLocked keeps a peer's direct offer while our own NAT view is
// not measured yet (a fresh run), so that our answer carries it: answered
// at once, both sides would check at once, and on a router that accepts
// input the first checks leave stale entries. It reports whether it kept
// s.
func (l *lane) holdOfferLocked(s *control.Signal) bool {
	if l.relay() || l.p.selfReadyLocked(time.Now()) {
		return false
	}
	if l.heldOffer == nil || l.heldOffer.Session != s.Session {
		l.p.log.Debug("punch: offer held until our NAT is measured", "session", s.Session)
		l.heldCands = nil
	}
	c := *s
	l.heldOffer = &c
	return true
}

// holdCandidateLocked keeps a candidate of the held offer's session, to
// be applied after our answer; it reports whether it kept s.
func (l *lane) holdCandidateLocked(s *control.Signal) bool {
	if l.heldOffer == nil || s.Session != l.heldOffer.Session {
		return false
	}
	if len(l.heldCands) < maxRemoteCandidates {
		c := *s
		l.heldCands = append(l.heldCands, &c)
	}
	return true
}

// releaseOfferLocked answers a held offer once our view is known, or the
// wait is over.
func (l *lane) releaseOfferLocked(now time.Time) {
	if l.heldOffer == nil || !l.p.selfReadyLocked(now) {
		return
	}
	s, cands := l.heldOffer, l.heldCands
	l.heldOffer, l.heldCands = nil, nil
	l.handleSignalLocked(s)
	for _, c := range cands {
		l.handleSignalLocked(c)
	}
}

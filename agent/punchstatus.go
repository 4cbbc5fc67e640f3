package agent

import (
	"fmt"
	"math"
	"time"
)

// punchStatusLocked is what the direct lane's punch is doing now, for
// status (PeerStatus.Punch): a synchronized open (syncopenstatus.go),
// checks held back for the punch order (punchorder.go), or the quiet
// wait after a first session that never connected; "" when none of them.
func (p *peer) punchStatusLocked(now time.Time) string {
	l := &p.direct
	if p.closed || p.asleep || !p.node.Online {
		return ""
	}
	if s := l.syncStatusLocked(now); s != "" {
		return s
	}
	if s := l.holdStatusLocked(now); s != "" {
		return s
	}
	if l.quietLocked(now) && !l.up() {
		return fmt.Sprintf("next direct attempt in %.0f s, once stale NAT entries expire", math.Ceil(l.quietUntil.Sub(now).Seconds()))
	}
	return ""
}

// holdStatusLocked says why the direct lane's checks are held back, for
// the orders other than a synchronized open; "" when they run.
func (l *lane) holdStatusLocked(now time.Time) string {
	if l.relay() || !l.holding || l.session == "" || l.p.birthdaySprayLocked() {
		return "" // the birthday punch holds them for good and says so
	}
	held := fmt.Sprintf("checks held back %.1f s", now.Sub(l.started).Seconds())
	switch l.order {
	case orderOpenLow:
		if len(l.openedTo) == 0 {
			return "low-TTL opening: waiting for the peer's public address; " + held
		}
		return fmt.Sprintf("low-TTL opening toward %s, TTL %d; %s until the peer's first checks leave",
			l.openedTo[len(l.openedTo)-1], l.p.a.natOpenTTL(), held)
	case orderFirst:
		return "filter opened for the peer's address; " + held + " until the peer's first checks leave"
	case orderWait:
		if l.mappingAsked {
			return "our mapping reported to the low-TTL opener; " + held + " until the peer opens toward it"
		}
		return held + " until the peer opens its side"
	}
	return ""
}

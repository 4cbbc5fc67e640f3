package agent

import (
	"fmt"
	"time"

	"github.com/pion/ice/v4"
)

// syncStatusLocked is the direct lane's synchronized open under way, for
// status (PeerStatus.Punch); "" when none runs: not this session's, the
// open skipped or given up, the session connected (even if it dropped
// since: a peer gone) or failed, or the open is from before the peer last
// came online (attempts were reset).
func (l *lane) syncStatusLocked(now time.Time) string {
	p, st := l.p, &l.p.sync
	if l.relay() || l.order != orderSync || l.session == "" || st.session != l.session || st.attempts == 0 ||
		l.everUp || l.up() || l.state == ice.ConnectionStateFailed {
		return ""
	}
	head := fmt.Sprintf("synchronized open %d: ", st.attempts)
	switch {
	case !st.fired.IsZero():
		return head + fmt.Sprintf("sent %.1f s ago to %d address%s, checks running",
			now.Sub(st.fired).Seconds(), st.targets, plural(st.targets, "", "es"))
	case !st.deadline.IsZero():
		at := "sending now"
		if d := st.deadline.Sub(now); d > 0 {
			at = fmt.Sprintf("sending at +%d ms", d.Milliseconds())
		}
		if st.haveOffset {
			return head + fmt.Sprintf("%s (clock offset %.1f ms ± %.1f ms)", at, ms(st.offset), ms(st.offsetErr))
		}
		return head + at + " (instant set by the peer)"
	case !l.holding || st.planned:
		return "" // skipped or given up: the checks run as without an open
	case p.controlling && !l.answered:
		return head + "waiting for the peer's answer"
	case p.controlling && !st.pingsDone:
		return head + fmt.Sprintf("measuring the peer's clock, %d of %d pings answered", len(st.samples), syncPings)
	case p.controlling:
		return head + "waiting for the peer's public address"
	}
	return head + "waiting for the peer to set the instant"
}

// ms is d in milliseconds, for one decimal.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

package agent

import (
	"fmt"
	"time"
)

// liveness is what a peer's WireGuard counters say about its path. ICE's
// consent checks say whether the selected pair answers; when the lane is no
// longer up, these counters are the evidence left: status says the path
// works only while authenticated packets keep coming back.
//
// The counters are sampled once a second (Agent.sampleTraffic) rather than
// counted per packet, so the data path pays nothing for it; times are
// therefore good to about a second.
type liveness struct {
	rx, tx uint64 // counters at the last sample
	// lastRx is when a sample first saw rx grow: a packet from the peer
	// arrived in the second before it.
	lastRx time.Time
	// unanswered is the first sample at which tx grew with nothing received
	// since; zero when the last thing that happened was an answer.
	unanswered time.Time
}

// keepaliveBytes is what a WireGuard keepalive adds to the send counter:
// a transport message with no payload (16-byte header, 16-byte tag).
const keepaliveBytes = 32

// observe takes one sample. WireGuard resets the counters when the peer is
// recreated, so any change (not only growth) counts as traffic; except a
// lone keepalive, which asks for nothing: the peer's WireGuard answers no
// keepalive, so an idle path with persistent keepalives would otherwise
// look silent a few seconds after each one.
func (l *liveness) observe(st wgPeerStats, now time.Time) {
	switch {
	case st.RxBytes != l.rx && st.RxBytes != 0:
		l.lastRx = now
		l.unanswered = time.Time{}
	case st.TxBytes != l.tx && st.TxBytes != 0 && l.unanswered.IsZero() &&
		st.TxBytes != l.tx+keepaliveBytes:
		l.unanswered = now
	}
	l.rx, l.tx = st.RxBytes, st.TxBytes
}

const (
	// noAnswerAfter: sending this long with nothing back is worth saying.
	noAnswerAfter = 3 * time.Second
	// pathDeadAfter: sending this long with nothing back means the path has
	// failed. It is WireGuard's own verdict: after KeepaliveTimeout (10 s)
	// plus RekeyTimeout (5 s) without a packet it starts a new handshake.
	pathDeadAfter = 15 * time.Second
	// idleTrust: with nothing sent, a packet this recent still vouches for
	// the path (the peer's keepalives come every 25 s).
	idleTrust = persistentKeepalive*time.Second + 5*time.Second
)

// verdict is what the counters say about a path whose lane is not up.
type verdict int

const (
	pathAnswers verdict = iota // packets still come back
	pathSilent                 // we send and nothing comes back, for a while now
	pathDead                   // no evidence the path works
)

// judge gives the verdict at now and, when the peer is not answering, how
// long it has been silent.
func (l *liveness) judge(now time.Time) (verdict, time.Duration) {
	if !l.unanswered.IsZero() {
		quiet := now.Sub(l.unanswered)
		switch {
		case quiet < noAnswerAfter:
			return pathAnswers, 0
		case quiet < pathDeadAfter:
			return pathSilent, quiet
		}
		return pathDead, quiet
	}
	if !l.lastRx.IsZero() && now.Sub(l.lastRx) < idleTrust {
		return pathAnswers, 0
	}
	return pathDead, 0
}

// noAnswer says how long the peer has not answered, for status reasons.
func noAnswer(d time.Duration) string {
	return fmt.Sprintf("no answer for %d s", int(d.Round(time.Second)/time.Second))
}

// sampleTraffic feeds every peer's liveness from one read of WireGuard's
// counters; called every second.
func (a *Agent) sampleTraffic(now time.Time) {
	if a.wg == nil {
		return
	}
	stats, err := a.wg.stats()
	if err != nil {
		return
	}
	for _, p := range a.peerList() {
		st, ok := stats[p.key.Hex()]
		if !ok {
			continue
		}
		p.mu.Lock()
		p.live.observe(st, now)
		p.mu.Unlock()
	}
}

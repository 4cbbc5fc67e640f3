package agent

import (
	"errors"
	"time"
)

// The clock math of a synchronized open (syncopen.go). Both sides must
// send at one instant, within less than the latency between their NATs
// (milliseconds on the internet), but their clocks may be seconds apart.
// The controlling side measures the offset of the peer's clock from its
// own the way NTP does, over the signalling path through the coordinator:
// a ping carries its send time, the pong the peer's clock when it
// answered, and the sample with the shortest round trip is kept, since
// its one-way legs can differ the least. The fire time then goes to the
// peer in the peer's own clock, so how long that message takes does not
// matter as long as it arrives before the instant.

// clockSample is one ping: sent and recv on our clock, peer on the
// peer's, all unix nanoseconds.
type clockSample struct {
	sent, peer, recv int64
}

func (s clockSample) rtt() time.Duration { return time.Duration(s.recv - s.sent) }

// offset is the peer's clock minus ours, assuming both legs took as long.
// Its error is at most half the round trip (all of it on one leg).
func (s clockSample) offset() time.Duration {
	return time.Duration(s.peer - (s.sent+s.recv)/2)
}

// bestSample is the sample with the shortest round trip; ok is false when
// none is usable.
func bestSample(samples []clockSample) (best clockSample, ok bool) {
	for _, s := range samples {
		if s.rtt() < 0 {
			continue
		}
		if !ok || s.rtt() < best.rtt() {
			best, ok = s, true
		}
	}
	return best, ok
}

const (
	// syncLead is how far ahead the controlling side sets the instant:
	// the fire message must reach the peer before it, over a signalling
	// path that a busy coordinator or stream can slow down.
	syncLead = 300 * time.Millisecond
	// syncMaxLead bounds the instant a peer may set: no further ahead
	// than this, so a peer cannot park our checks.
	syncMaxLead = 2 * time.Second
)

// planFire picks the instant from now, with the best sample's round trip
// and offset: when we send (our clock, monotonic) and what the peer is
// told (its clock, unix ns). The lead grows with a slow signalling path;
// ok is false when it would have to pass what a peer accepts
// (syncMaxLead, with a margin): the fire message would come too late.
func planFire(now time.Time, best clockSample) (self time.Time, peerAt int64, ok bool) {
	lead := max(syncLead, 4*best.rtt())
	if lead > syncMaxLead-100*time.Millisecond {
		return time.Time{}, 0, false
	}
	self = now.Add(lead)
	return self, now.UnixNano() + int64(lead) + int64(best.offset()), true
}

// syncMinRTT: a signalling round trip (us -> coordinator -> peer and
// back) shorter than this skips the open. The direct path between the two
// NATs is no longer than the way around through the coordinator, so such
// a round trip puts the NATs under half of it apart one way, and the skew
// an open reaches (0.1-1 ms measured in the lab, more on a busy host)
// cannot beat that: a miss only leaves stale entries that move our
// mapping for every new flow, which other punches (a birthday punch
// under way) then aim past. The sides check at once, as without an open.
const syncMinRTT = 3 * time.Millisecond

// natsTooClose tells whether the best sample's round trip proves the two
// NATs too close together for an open.
func natsTooClose(best clockSample) bool { return best.rtt() < syncMinRTT }

var (
	errFireLate = errors.New("fire time already passed")
	errFireFar  = errors.New("fire time too far ahead")
)

// fireDeadline turns a peer's fire time (our clock, unix ns) into a
// monotonic deadline. A time already passed returns now and errFireLate:
// the fire message came late, and the open is sent at once (it is likely
// lost, and the quiet retry follows).
func fireDeadline(now time.Time, at int64) (time.Time, error) {
	d := time.Duration(at - now.UnixNano())
	switch {
	case d > syncMaxLead:
		return time.Time{}, errFireFar
	case d < 0:
		return now, errFireLate
	}
	return now.Add(d), nil
}

// openSkew works out, from how long after its own first opening packet
// each side saw the peer's (rSelf on ours, rPeer on the peer's), how much
// later than us the peer really sent, and the one-way latency between the
// two NATs. With the two sends at T+eSelf and T+ePeer and a latency L:
// rSelf = L + ePeer - eSelf and rPeer = L + eSelf - ePeer, so no clock
// needs to agree: each r is read on one clock.
func openSkew(rSelf, rPeer time.Duration) (skew, latency time.Duration) {
	return (rSelf - rPeer) / 2, (rSelf + rPeer) / 2
}

package agent

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
)

// A synchronized simultaneous open joins two sides that both filter by
// address and port (port-restricted cone, double NAT) when neither may
// send first: on a router without an input firewall the first packet that
// arrives before its host has sent to the sender leaves a confirmed
// conntrack entry and moves the host's mapping (punchorder.go). Both sides
// hold their checks back; the controlling side measures the offset of the
// peer's clock over the signalling path (syncclock.go) and names an
// instant; at that instant both send a few opening packets to each other's
// public address from the shared socket, so each NAT has an entry toward
// the peer before the peer's first packet arrives whenever the two sends
// are closer together than the latency between the NATs. The checks then
// start and find the entries in place. A miss leaves stale entries on
// both routers; the session fails and the quiet retry (staleExpiry) waits
// them out before the next open, at most syncMaxAttempts times per peer
// coming online. The relay carries the traffic meanwhile.
//
// Measured in the lab (e2e TestMeshAllNATPairs, WAN delay run, and
// TestSyncOpen): see the README, "Synchronized open".

// syncOpenEnabled: this build takes part in synchronized opens (it says
// so in Signal.SyncOpen). A variable so that a test build can switch it
// off to show what it fixes.
var syncOpenEnabled = true

const (
	// syncPings clock samples per open, syncPingGap apart.
	syncPings   = 5
	syncPingGap = 20 * time.Millisecond
	// syncPongWait: the instant is planned with the samples in by then
	// (counted from the first ping) if not all came back.
	syncPongWait = time.Second
	// syncHoldMax bounds how long both sides hold their checks back for
	// an open that is not planned (a peer that stopped answering): then
	// they check at once, as without one.
	syncHoldMax = 3 * time.Second
	// syncBurst opening packets per target, syncBurstGap apart: the first
	// makes the entry, the others cover a lost one.
	syncBurst    = 3
	syncBurstGap = 10 * time.Millisecond
	// syncCollect: the targets are read this long before the instant, so
	// no lock is taken in the last moment.
	syncCollect = 20 * time.Millisecond
	// syncSpin: the last stretch before the instant is spun rather than
	// slept, for a precise send.
	syncSpin = 2 * time.Millisecond
	// syncReportAfter: each side tells when the peer's first opening
	// packet arrived this long after its own.
	syncReportAfter = 500 * time.Millisecond
	// syncMaxAttempts bounds the opens per peer coming online; after them
	// the sides check at once, as before.
	syncMaxAttempts = 3
)

// syncState is a peer's synchronized opens. The attempt fields belong to
// the direct session named session.
type syncState struct {
	capable  bool // the peer takes part (Signal.SyncOpen)
	attempts int  // opens since the peer came online

	session   string
	sent      []int64       // controlling: our pings' send times
	pongs     int           // controlled: pongs sent
	samples   []clockSample // controlling
	pingsDone bool
	planned   bool // the instant is set
	fired     time.Time
	rSelf     time.Duration
	rPeer     time.Duration
	haveSelf  bool
	havePeer  bool
	// measured: both reported; skew is how much later the peer sent than
	// we did, latency the one-way time between the NATs.
	measured      bool
	skew, latency time.Duration

	// For status (syncopenstatus.go): deadline is when we send, zero when
	// the open was skipped; offset the peer's clock minus ours, off by at
	// most offsetErr (half the best sample's round trip), controlling
	// side only; targets the public candidates the packets went to.
	deadline          time.Time
	offset, offsetErr time.Duration
	haveOffset        bool
	targets           int
	told              bool // last_change named the open (syncLastChangeLocked)
}

// syncBeginLocked starts the bookkeeping of a new direct session's open,
// or says why the order falls back to checking at once.
func (l *lane) syncBeginLocked() bool {
	p := l.p
	st := &p.sync
	if st.attempts >= syncMaxAttempts {
		if st.attempts == syncMaxAttempts { // said once per peer coming online
			p.log.Info("synchronized open: attempts used up; checking at once", "attempts", st.attempts)
			st.attempts++
		}
		return false
	}
	if p.samePublicLocked() {
		return false // one NAT for both: the LAN path needs no open
	}
	st.attempts++
	*st = syncState{capable: st.capable, attempts: st.attempts, session: l.session}
	return true
}

// samePublicLocked tells whether the coordinator sees us and the peer
// come from one public address: one router, no NAT between us.
func (p *peer) samePublicLocked() bool {
	p.a.mu.Lock()
	own := p.a.self.SeenFrom
	p.a.mu.Unlock()
	return own != "" && own == p.node.SeenFrom
}

// syncPingsLocked (controlling side, the answer is in) sends the clock
// pings of the session's open.
func (l *lane) syncPingsLocked() {
	p, agent, session := l.p, l.ice, l.session
	go func() {
		for i := range syncPings {
			if i > 0 {
				time.Sleep(syncPingGap)
			}
			p.mu.Lock()
			if l.ice != agent {
				p.mu.Unlock()
				return
			}
			now := time.Now().UnixNano()
			p.sync.sent = append(p.sync.sent, now)
			l.signal(control.Signal{Kind: control.SignalSyncPing, Session: session, At: now})
			p.mu.Unlock()
		}
	}()
	time.AfterFunc(syncPongWait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if l.ice == agent && !p.sync.pingsDone {
			p.sync.pingsDone = true
			l.syncPlanLocked()
		}
	})
}

// syncSignalLocked handles the open's signals of the current session.
func (l *lane) syncSignalLocked(s *control.Signal) {
	p, st := l.p, &l.p.sync
	if l.ice == nil || s.Session != l.session || l.order != orderSync || st.session != l.session {
		return
	}
	now := time.Now()
	switch s.Kind {
	case control.SignalSyncPing:
		if p.controlling || st.pongs >= 2*syncPings {
			return
		}
		st.pongs++
		l.signal(control.Signal{Kind: control.SignalSyncPong, Session: s.Session, Echo: s.At, At: now.UnixNano()})
	case control.SignalSyncPong:
		if !p.controlling || st.pingsDone {
			return
		}
		for _, sent := range st.sent {
			if sent == s.Echo {
				st.samples = append(st.samples, clockSample{sent: sent, peer: s.At, recv: now.UnixNano()})
				break
			}
		}
		if len(st.samples) >= syncPings {
			st.pingsDone = true
			l.syncPlanLocked()
		}
	case control.SignalSyncFire:
		if p.controlling || st.planned {
			return
		}
		if s.At == 0 { // the controlling side skips the open
			st.planned = true
			if l.holding {
				l.releaseLocked("the peer skips the synchronized open")
			}
			return
		}
		deadline, err := fireDeadline(now, s.At)
		if err == errFireFar {
			p.log.Info("synchronized open: fire time refused", "err", err)
			return
		}
		if err != nil {
			p.log.Info("synchronized open: fire time came late; opening now", "late", time.Duration(now.UnixNano()-s.At).String())
		}
		st.planned = true
		l.syncFireLocked(deadline)
	case control.SignalSyncDone:
		if st.havePeer {
			return
		}
		st.rPeer, st.havePeer = time.Duration(s.At), true
		l.syncResultLocked()
	}
}

// syncPlanLocked (controlling side) sets the instant once the clock
// samples are in and the peer's public candidate is here to aim at.
func (l *lane) syncPlanLocked() {
	p, st := l.p, &l.p.sync
	if !p.controlling || st.planned || !st.pingsDone || !l.holding || st.session != l.session {
		return
	}
	best, ok := bestSample(st.samples)
	if !ok {
		l.releaseLocked("no clock sample from the peer")
		return
	}
	if len(l.syncTargetsLocked()) == 0 {
		return // addRemoteLocked plans again when it comes
	}
	if natsTooClose(best) {
		st.planned = true
		l.signal(control.Signal{Kind: control.SignalSyncFire, Session: l.session})
		p.log.Info("synchronized open skipped: the NATs are too close together", "signal_rtt", best.rtt().Round(10*time.Microsecond).String())
		l.releaseLocked("NATs too close for a synchronized open")
		return
	}
	self, peerAt, ok := planFire(time.Now(), best)
	if !ok {
		st.planned = true
		l.signal(control.Signal{Kind: control.SignalSyncFire, Session: l.session})
		l.releaseLocked("signalling too slow for a synchronized open")
		return
	}
	st.planned = true
	st.offset, st.offsetErr, st.haveOffset = best.offset(), best.rtt()/2, true
	l.signal(control.Signal{Kind: control.SignalSyncFire, Session: l.session, At: peerAt})
	p.log.Debug("synchronized open planned", "in", time.Until(self).Round(time.Millisecond).String(),
		"signal_rtt", best.rtt().Round(10*time.Microsecond).String(), "clock_offset", best.offset().Round(10*time.Microsecond).String(),
		"samples", len(st.samples))
	l.syncFireLocked(self)
}

// syncTargetsLocked are the peer's public IPv4 candidates held back, on
// the IP the coordinator sees the peer come from: a member chooses its own
// candidates, and one naming a stranger's address must not aim our opening
// packets at it (as birthday probes, seenFromLocked).
func (l *lane) syncTargetsLocked() []netip.AddrPort {
	var out []netip.AddrPort
	for _, c := range l.held {
		if c.Type() != ice.CandidateTypeServerReflexive {
			continue
		}
		ip, err := netip.ParseAddr(c.Address())
		if err != nil || !ip.Unmap().Is4() || !l.p.seenFromLocked(ip) {
			continue
		}
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(c.Port()))
		if len(out) < maxPeerPublic {
			out = append(out, ap)
		}
	}
	return out
}

// syncToken is what the opening packets of a session carry: the session
// id's 8 bytes.
func syncToken(session string) (tok bdayToken, ok bool) {
	b, err := hex.DecodeString(session)
	if err != nil || len(b) != len(tok) {
		return tok, false
	}
	copy(tok[:], b)
	return tok, true
}

// syncFireLocked starts the goroutine that opens at deadline, aiming at
// the peer's public candidates held now.
func (l *lane) syncFireLocked(deadline time.Time) {
	l.p.sync.deadline = deadline
	go l.syncFire(l.ice, l.session, deadline, l.syncTargetsLocked())
}

// syncFire sends the opening packets at deadline, starts the checks, and
// reports when the peer's first opening packet arrived. It takes no lock
// before the send (another lane's work can hold the peer's for tens of
// milliseconds), unless it has no target yet: the peer's public candidate
// is signalled before the fire time, but may come late.
func (l *lane) syncFire(agent *ice.Agent, session string, deadline time.Time, targets []netip.AddrPort) {
	p, bind := l.p, l.p.a.bind
	tok, ok := syncToken(session)
	if ok {
		bind.syncs.expect(tok)
		defer bind.syncs.forget(tok)
	}
	pkt := syncPacket(tok)
	if len(targets) == 0 {
		sleepUntil(deadline.Add(-syncCollect))
		p.mu.Lock()
		if l.ice != agent {
			p.mu.Unlock()
			return
		}
		targets = l.syncTargetsLocked()
		p.mu.Unlock()
	}
	sleepUntil(deadline)
	fired := time.Now()
	for _, to := range targets {
		if err := bind.sendOpening(to, 64, pkt); err != nil {
			p.log.Warn("synchronized open: opening packet not sent", "to", to.String(), "err", err)
		}
	}
	p.mu.Lock()
	if l.ice != agent {
		p.mu.Unlock()
		return
	}
	p.sync.fired, p.sync.targets = fired, len(targets)
	late := fired.Sub(deadline)
	if l.holding {
		l.releaseLocked("synchronized open")
	}
	p.mu.Unlock()
	for range syncBurst - 1 {
		time.Sleep(syncBurstGap)
		for _, to := range targets {
			_ = bind.sendOpening(to, 64, pkt)
		}
	}
	time.Sleep(time.Until(fired.Add(syncReportAfter)))
	at, from, got := bind.syncs.arrival(tok)
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.ice != agent {
		return
	}
	// One line per open: fired_us lets the lab compare both sides' sends
	// on its one clock (e2e syncSkewTable).
	if !got {
		p.log.Info("synchronized open: no opening packet from the peer arrived", "to", len(targets),
			"late", late.Round(time.Microsecond).String(), "fired_us", fired.UnixMicro())
		return
	}
	p.sync.rSelf, p.sync.haveSelf = at.Sub(fired), true
	p.log.Info("synchronized open: the peer's opening packet arrived", "to", len(targets), "from", from.String(),
		"after", at.Sub(fired).Round(time.Microsecond).String(), "late", late.Round(time.Microsecond).String(), "fired_us", fired.UnixMicro())
	l.signal(control.Signal{Kind: control.SignalSyncDone, Session: session, At: int64(p.sync.rSelf)})
	l.syncResultLocked()
}

// syncResultLocked, once both sides reported, works out the skew and
// puts it in the path's last_change.
func (l *lane) syncResultLocked() {
	p, st := l.p, &l.p.sync
	if !st.haveSelf || !st.havePeer {
		return
	}
	st.skew, st.latency = openSkew(st.rSelf, st.rPeer)
	st.measured = true
	p.log.Debug("synchronized open measured", "skew", st.skew.Round(time.Microsecond).String(), "nat_latency", st.latency.Round(time.Microsecond).String())
	if p.active == l && st.told && strings.HasPrefix(p.lastChange, syncChangePrefix) {
		p.lastChange = st.describe(p.changedAt)
	}
}

// describe is last_change of a direct path that came up at up after the
// open: how long after the opening packets, and the skew once measured.
func (st *syncState) describe(up time.Time) string {
	s := fmt.Sprintf(syncChangePrefix+"%.1f s", up.Sub(st.fired).Seconds())
	if st.measured {
		s += fmt.Sprintf(", skew %.2f ms, %.1f ms between the NATs",
			float64(st.skew.Abs())/float64(time.Millisecond), float64(st.latency)/float64(time.Millisecond))
	}
	return s
}

const syncChangePrefix = "direct after synchronized open: "

// syncLastChangeLocked is last_change for the direct path coming up now,
// "" unless the current session's open led to it. Only the session's
// first path change is the open's: a later one (the endpoint moved) is
// not, and a survivor whose peer restarted keeps the direct lane active
// through the new session, so the change cannot be told by the lane.
func (p *peer) syncLastChangeLocked() string {
	st := &p.sync
	if st.told || st.fired.IsZero() || st.session != p.direct.session || p.changedAt.Before(st.fired) {
		return ""
	}
	st.told = true
	return st.describe(p.changedAt)
}

// sleepUntil returns at deadline: it sleeps most of the way and spins the
// last syncSpin, as timers wake late on a busy machine.
func sleepUntil(deadline time.Time) {
	if d := time.Until(deadline) - syncSpin; d > 0 {
		time.Sleep(d)
	}
	for time.Now().Before(deadline) {
		runtime.Gosched()
	}
}

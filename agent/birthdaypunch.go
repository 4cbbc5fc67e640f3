package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// birthdayState is one peer's birthday punching (birthday.go); guarded
// by the peer's mutex.
type birthdayState struct {
	capable bool             // the peer takes part (Signal.Birthday)
	public  []netip.AddrPort // the peer's server-reflexive candidates, newest last
	note    string           // why no attempt runs although one side is symmetric

	running bool
	role    birthdayRole
	tok     bdayToken
	phase   string // "asking", "probing" (easy side), "spraying" (symmetric side)
	started time.Time
	target  netip.AddrPort // probe: the peer's public address; spray: where the openings went
	probes  *atomic.Int64  // probes sent in this attempt
	sockets int            // spray: sockets opened in this attempt
	// askedFrom: probe side, the mapping the sockets open toward.
	askedFrom netip.AddrPort
	askedAt   time.Time
	// missAt: probe side, when an attempt last probed without a hit. A
	// mapping query from before then is not asked toward again
	// (staleAskLocked).
	missAt time.Time
	// stop ends a spray before its time (the peer asked anew).
	stop chan struct{}

	attempts int
	quick    int           // attempts retried at once in a row
	next     time.Time     // probe side: no new attempt before then
	retry    time.Duration // the next backoff
	lastAsk  time.Time     // spray side: when sockets were last opened
	// pending is an ask that came before this side could serve it (its
	// role or the peer's public address not known yet), served when
	// they are, within birthdayReadyWait of its arrival.
	pending *pendingAsk
	result  string // last_change of the path it found
	// heard is when the birthday path last brought something from the
	// peer (unix ns; birthdayheart.go), read and written off the lock.
	heard atomic.Int64
}

type pendingAsk struct {
	tok  bdayToken
	cand string
	at   time.Time
}

// maxPeerPublic bounds the peer's public addresses kept.
const maxPeerPublic = 4

// notePublicLocked records a server-reflexive candidate of the peer's
// direct lane: the only addresses a birthday punch ever sends to.
func (p *peer) notePublicLocked(ap netip.AddrPort) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.Addr().Is4() {
		return
	}
	bd := &p.bd
	for i, o := range bd.public {
		if o == ap {
			bd.public = append(bd.public[:i], bd.public[i+1:]...)
			break
		}
	}
	bd.public = append(bd.public, ap)
	if len(bd.public) > maxPeerPublic {
		bd.public = bd.public[1:]
	}
}

// peerPublicIPLocked tells whether the peer signalled a as its own, and
// the coordinator sees the peer come from a (seenFromLocked).
func (p *peer) peerPublicIPLocked(a netip.Addr) bool {
	if !p.seenFromLocked(a) {
		return false
	}
	for _, o := range p.bd.public {
		if o.Addr() == a.Unmap() {
			return true
		}
	}
	return false
}

// seenFromLocked tells whether a is the address the coordinator sees the
// peer's stream come from. A member chooses its own candidates: without
// this check it could name a stranger's address as its public one and
// have this agent spray that stranger with probes. An older coordinator
// says nothing (SeenFrom empty), and then no birthday punch is aimed.
func (p *peer) seenFromLocked(a netip.Addr) bool {
	seen, err := netip.ParseAddr(p.node.SeenFrom)
	return err == nil && seen.Unmap() == a.Unmap()
}

// probeTargetLocked is the newest public address the peer signalled that
// is also where the coordinator sees it; false when there is none.
func (p *peer) probeTargetLocked() (netip.AddrPort, bool) {
	for i := len(p.bd.public) - 1; i >= 0; i-- {
		if ap := p.bd.public[i]; p.seenFromLocked(ap.Addr()) {
			return ap, true
		}
	}
	return netip.AddrPort{}, false
}

func (p *peer) birthdayRoleLocked() (birthdayRole, string) {
	self := bdayView{NAT: p.a.natLabel(), Filtering: p.a.natFiltering(), OpenTTL: p.a.natOpenTTL(), Capable: true}
	peer := bdayView{NAT: p.peerNAT, Filtering: p.peerFiltering, OpenTTL: p.peerOpenTTL, Capable: p.bd.capable}
	return decideBirthday(self, peer)
}

// birthdaySprayLocked tells whether this side opens birthday sockets for
// the peer.
func (p *peer) birthdaySprayLocked() bool {
	role, _ := p.birthdayRoleLocked()
	return role == bdaySpray
}

// birthdayTickLocked starts an attempt on the easy side when one is due:
// no direct path, both sides known and taking part, the peer's public
// address known. Called every second and on signals.
func (p *peer) birthdayTickLocked(now time.Time) {
	bd := &p.bd
	role, note := p.birthdayRoleLocked()
	bd.note = note
	if pa := bd.pending; pa != nil {
		bd.pending = nil
		if now.Sub(pa.at) < birthdayReadyWait {
			p.birthdayAskedLocked(pa.tok, pa.cand, pa.at)
		}
	}
	if p.punched.up() && p.punchedSilentLocked(now) {
		p.dropPunchedLocked("nothing from the peer on the birthday path")
	}
	if role != bdayProbe || bd.running || p.closed || !p.node.Online || p.direct.up() || p.punched.up() ||
		now.Before(bd.next) || len(bd.public) == 0 {
		return
	}
	target, ok := p.probeTargetLocked()
	if !ok {
		bd.note = "birthday punch skipped: the peer's public address is not where the coordinator sees it"
		return
	}
	var tok bdayToken
	_, _ = rand.Read(tok[:])
	bd.running, bd.role, bd.tok, bd.phase, bd.started = true, bdayProbe, tok, "asking", now
	bd.target = target
	bd.probes = new(atomic.Int64)
	bd.attempts++
	go p.birthdayAsk(tok)
}

// currentLocked tells whether tok is the running attempt.
func (bd *birthdayState) currentLocked(tok bdayToken) bool { return bd.running && bd.tok == tok }

// birthdayFailLocked ends the running attempt and schedules the next.
func (p *peer) birthdayFailLocked(why string) {
	bd := &p.bd
	took := time.Since(bd.started)
	p.log.Info("birthday punch failed", "role", bd.role.String(), "why", why, "after", took.Round(time.Millisecond).String(), "probes", bd.probes.Load())
	if bd.role == bdayProbe && bd.phase == "probing" {
		bd.missAt = time.Now()
	}
	bd.running = false
	if bd.role == bdayProbe {
		bd.retry = min(max(2*bd.retry, birthdayRetryMin), birthdayRetryMax)
		bd.next = time.Now().Add(bd.retry)
	}
}

// birthdayAsk (easy side) learns where its new flows leave from now (a
// STUN query from the shared socket; a peer's early packet may have moved
// the mapping) and asks the peer to open its sockets toward there.
func (p *peer) birthdayAsk(tok bdayToken) {
	mapped, seen, err := p.a.newFlowMapping()
	last, at := p.a.bind.lastMapping()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bd.currentLocked(tok) {
		return
	}
	if fresh := err == nil && seen.After(p.bd.missAt); !fresh {
		mapped = netip.AddrPort{}
		// A query that failed (a STUN server down) waits for nothing:
		// the ask goes as before.
		if until, ok := p.staleAskLocked(last, at); ok && (err == nil || errors.Is(err, errNoFreshSTUN)) {
			// The last answer is from before the previous attempt missed:
			// it names the port the peer's sockets opened toward, which is
			// probably not where our probes left from.
			p.bd.running = false
			p.bd.attempts--
			p.bd.next = until
			p.log.Info("birthday punch waits for a fresh mapping query: the last one is from before the last miss", "until", until.Format(time.TimeOnly))
			return
		}
		if last.IsValid() && time.Since(at) < staleExpiry {
			mapped = last // no fresh STUN address: the last query's answer
		}
	}
	cand := ""
	if mapped.IsValid() {
		cand = mapped.String()
	}
	p.log.Info("birthday punch: asking the peer to open its sockets", "attempt", p.bd.attempts, "from", cand)
	p.bd.askedFrom = mapped
	p.bd.askedAt = time.Now()
	p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalBirthdayAsk, Session: hex.EncodeToString(tok[:]), Candidate: cand})
	time.AfterFunc(birthdayReadyWait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.bd.currentLocked(tok) && p.bd.phase == "asking" {
			p.birthdayFailLocked("the peer did not open its sockets")
		}
	})
}

func parseBdayToken(s string) (bdayToken, error) {
	var tok bdayToken
	if len(s) != 2*len(tok) {
		return tok, errors.New("token: want 16 hex digits")
	}
	_, err := hex.Decode(tok[:], []byte(s))
	return tok, err
}

// birthdaySignalLocked handles the peer's birthday signals.
func (p *peer) birthdaySignalLocked(s *control.Signal) {
	tok, err := parseBdayToken(s.Session)
	if err != nil {
		p.log.Debug("birthday signal with a bad token", "kind", s.Kind)
		return
	}
	bd := &p.bd
	switch s.Kind {
	case control.SignalBirthdayAsk:
		p.birthdayAskedLocked(tok, s.Candidate, time.Now())
	case control.SignalBirthdayReady:
		if !bd.currentLocked(tok) || bd.phase != "asking" {
			return
		}
		bd.phase, bd.started = "probing", time.Now()
		p.log.Info("birthday punch: probing the peer's ports", "ip", bd.target.Addr().String(), "rate", birthdayProbeRate)
		go p.birthdayProbe(tok, bd.target.Addr(), bd.probes)
	}
}

// birthdayAskedLocked (symmetric side) opens the sockets, if this side
// sprays for the peer and the peer asks toward an address it signalled
// as its own, at most once per birthdayAskGap. An ask that arrives
// before the role or the peer's public address is known waits (at).
func (p *peer) birthdayAskedLocked(tok bdayToken, cand string, at time.Time) {
	bd := &p.bd
	wait := func(why string) {
		p.log.Debug("birthday ask waits", "why", why)
		bd.pending = &pendingAsk{tok: tok, cand: cand, at: at}
	}
	if role, _ := p.birthdayRoleLocked(); role != bdaySpray {
		wait("we do not spray for this peer (yet)")
		return
	}
	now := time.Now()
	if p.direct.up() || (bd.running && bd.tok == tok) {
		return
	}
	if bd.running && bd.role == bdaySpray {
		// The peer gave that attempt up (its mapping moved): a new one
		// replaces it.
		close(bd.stop)
		bd.running = false
	}
	if now.Sub(bd.lastAsk) < birthdayAskGap {
		wait("asked again too soon")
		return
	}
	if p.punched.up() {
		// The peer asks only when it has no birthday path: ours is dead
		// at its end.
		p.dropPunchedLocked("the peer asks for a new birthday punch")
	}
	var dest netip.AddrPort
	if cand == "" {
		if len(bd.public) == 0 {
			wait("the peer's public address is not known yet")
			return
		}
		dest = bd.public[len(bd.public)-1]
	} else {
		ap, err := netip.ParseAddrPort(cand)
		if err != nil || !ap.Addr().Unmap().Is4() {
			p.log.Debug("birthday ask with a bad address ignored")
			return
		}
		dest = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if !p.peerPublicIPLocked(dest.Addr()) {
		// Never sent toward; the peer's candidate may still be on its way.
		wait("toward an address the peer has not signalled (yet)")
		return
	}
	ttl := p.a.natOpenTTL()
	if ttl == 0 {
		return
	}
	if p.a.sprays.Add(1) > birthdayMaxSprays {
		p.a.sprays.Add(-1)
		wait("too many birthday punches under way")
		return
	}
	bd.running, bd.role, bd.tok, bd.phase, bd.started, bd.lastAsk = true, bdaySpray, tok, "spraying", now, now
	bd.target, bd.probes, bd.sockets = dest, new(atomic.Int64), 0
	bd.stop = make(chan struct{})
	go p.birthdaySpray(tok, dest, ttl, bd.stop)
}

// birthdayProbe (easy side) sends probes to random ports of ip from the
// shared socket, birthdayProbeRate a second for birthdayProbeWindow at
// most, until a reply names the attempt.
func (p *peer) birthdayProbe(tok bdayToken, ip netip.Addr, probes *atomic.Int64) {
	replies := p.a.bind.bday.expect(tok)
	defer p.a.bind.bday.forget(tok, replies)
	const tickEvery = 5 * time.Millisecond
	const perTick = birthdayProbeRate * int(tickEvery) / int(time.Second)
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	deadline := time.Now().Add(birthdayProbeWindow)
	pkt := bdayPacket(bdayProbeType, tok)
	ports := mrand.Perm(65536 - 1024)
	next := 0
	for {
		select {
		case from := <-replies:
			if from.Addr().Unmap() != ip {
				continue
			}
			p.mu.Lock()
			if p.bd.currentLocked(tok) {
				p.birthdayProbeWonLocked(netip.AddrPortFrom(ip, from.Port()), probes.Load())
			}
			p.mu.Unlock()
			return
		case now := <-tick.C:
			p.mu.Lock()
			current := p.bd.currentLocked(tok) && !p.closed
			switch {
			case !current:
			case now.After(deadline):
				p.birthdayFailLocked("no mapping answered")
				current = false
			case p.mappingMovedLocked():
				p.birthdayRetryNowLocked("our mapping moved since the ask")
				p.movedNotMissedLocked()
				current = false
			case probes.Load() >= birthdayMissProbes:
				p.birthdayRetryNowLocked("no hit in " + thousands(birthdayMissProbes) + " probes: our mapping probably moved")
				current = false
			}
			p.mu.Unlock()
			if !current {
				return
			}
			for range perTick {
				if next == len(ports) {
					break
				}
				to := netip.AddrPortFrom(ip, uint16(1024+ports[next]))
				next++
				if err := p.a.bind.SendTo(pkt, to); err != nil {
					break
				}
				probes.Add(1)
			}
		}
	}
}

// birthdayMissProbes: with birthdaySockets mappings among ~64,500 ports,
// this many probes all miss with a chance of about 1 in 5 million, unless
// the probes leave from another port than the sockets opened toward (a
// clash with a stale entry on our router moved the shared socket's
// mapping for new flows).
const birthdayMissProbes = 4000

// birthdayQuickRetries bounds the attempts retried at once after a moved
// mapping before the backoff applies again.
const birthdayQuickRetries = 2

// staleAskLocked tells whether the last mapping query (last, seen at at)
// is from before the last miss while a fresh STUN address to ask again
// comes free at until. Our probes missed every socket the peer opened
// toward that mapping: on a router without an input firewall a peer's
// early check moves the shared socket's mapping for every new flow
// (Linux gives a new flow its source's newest flow's mapping, and each
// probe is a new flow), and asking toward it again misses again until
// the moved entries expire (issue 10). ok is false when asking is as
// good as it gets: no miss yet, a query since, or no STUN address ever
// fresh.
func (p *peer) staleAskLocked(last netip.AddrPort, at time.Time) (until time.Time, ok bool) {
	miss := p.bd.missAt
	if miss.IsZero() || (last.IsValid() && at.After(miss)) {
		return time.Time{}, false
	}
	until, ok = p.a.stunFreeAt()
	if !ok {
		return time.Time{}, false
	}
	if now := time.Now(); until.Before(now) {
		until = now
	}
	return until, true
}

// mappingMovedLocked tells whether a mapping query since the ask saw our
// new flows leave from another port than the one asked toward.
func (p *peer) mappingMovedLocked() bool {
	m, at := p.a.bind.lastMapping()
	asked := p.bd.askedFrom
	return asked.IsValid() && m.IsValid() && at.After(p.bd.askedAt) && m != asked
}

// movedNotMissedLocked keeps the query that saw our mapping move usable
// for the next ask. That attempt did not miss toward a stale mapping: a
// query since the ask told us where new flows leave from now, and waiting
// for a fresh STUN address instead (staleAskLocked) cost a pair 30 s in
// the lab on input-accept routers.
func (p *peer) movedNotMissedLocked() {
	if _, at := p.a.bind.lastMapping(); at.After(p.bd.askedAt) {
		p.bd.missAt = at.Add(-time.Nanosecond)
	}
}

// birthdayRetryNowLocked ends the attempt and lets the next start at once
// (up to birthdayQuickRetries times in a row).
func (p *peer) birthdayRetryNowLocked(why string) {
	p.birthdayFailLocked(why)
	if p.bd.quick < birthdayQuickRetries {
		p.bd.quick++
		p.bd.next = time.Now()
	}
}

// thousands writes n with thousands separators: 1,130.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// punchStatus is the running attempt, for status; "" when none runs.
func (bd *birthdayState) punchStatus(now time.Time) string {
	if !bd.running {
		return ""
	}
	took := now.Sub(bd.started).Seconds()
	switch bd.phase {
	case "asking":
		return fmt.Sprintf("birthday punch %d: asking the peer to open its sockets", bd.attempts)
	case "probing":
		return fmt.Sprintf("birthday punch %d: probing ports of %s, %.1f s, %s probes", bd.attempts, bd.target.Addr(), took, thousands(bd.probes.Load()))
	}
	return fmt.Sprintf("birthday punch: %d sockets open toward %s, %.1f s", bd.sockets, bd.target, took)
}

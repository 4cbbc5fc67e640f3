package agent

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/agent/datapath"
	"github.com/meshvpn/meshvpn/control"
)

// lanePunched names the path a birthday punch found. It is a lane without
// an ICE session: up while its socket works; peer.reconsiderLocked puts
// it after the direct lane and before the relay.
const lanePunched = "punched"

// bdayWin is the socket a probe reached, and the probe's source.
type bdayWin struct {
	c    *datapath.PunchSocket
	from netip.AddrPort
}

// birthdaySpray (symmetric side) opens the sockets, tells the peer, and
// waits for the first probe that names the attempt and comes from the
// peer's address; that socket answers and is kept, the rest are closed.
func (p *peer) birthdaySpray(tok bdayToken, dest netip.AddrPort, ttl int, stop <-chan struct{}) {
	defer p.a.sprays.Add(-1)
	conns := datapath.OpenPunchSockets(birthdaySockets, dest, ttl, openingPayload)
	p.mu.Lock()
	if !p.bd.currentLocked(tok) || len(conns) == 0 {
		if p.bd.currentLocked(tok) {
			p.birthdayFailLocked("no socket could be opened")
		}
		p.mu.Unlock()
		closeAll(conns, nil)
		return
	}
	p.bd.sockets = len(conns)
	p.log.Info("birthday punch: sockets open", "sockets", len(conns), "toward", dest.String(), "ttl", ttl)
	p.a.sendSignal(control.Signal{To: p.id, Kind: control.SignalBirthdayReady, Session: hex.EncodeToString(tok[:])})
	p.mu.Unlock()

	win := make(chan bdayWin, 1)
	deadline := time.Now().Add(birthdayReadyWait + birthdayProbeWindow)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			awaitProbe(c, tok, dest.Addr(), deadline, win)
		}()
	}
	var w bdayWin
	select {
	case w = <-win:
	case <-stop:
	case <-time.After(time.Until(deadline)):
	}
	closeAll(conns, w.c)
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.bd.currentLocked(tok) || p.closed:
		if w.c != nil {
			w.c.Close()
		}
	case w.c == nil:
		p.birthdayFailLocked("no probe arrived")
	default:
		p.birthdaySprayWonLocked(w.c, w.from)
	}
}

// awaitProbe reads c until deadline for a probe of tok from ip; it
// answers it (a few times: the easy side stops on the first) and reports
// the win, unless another socket won first.
func awaitProbe(c *datapath.PunchSocket, tok bdayToken, ip netip.Addr, deadline time.Time, win chan<- bdayWin) {
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		typ, got, ok := parseBdayPacket(buf[:n])
		if !ok || typ != bdayProbeType || got != tok || from.Addr() != ip {
			continue
		}
		answerProbe(c, tok, from)
		select {
		case win <- bdayWin{c: c, from: from}:
		default:
		}
		return
	}
}

// bdayReplies: answers per probe, against loss.
const bdayReplyCopies = 3

func answerProbe(c *datapath.PunchSocket, tok bdayToken, to netip.AddrPort) {
	reply := bdayPacket(bdayReplyType, tok)
	for range bdayReplyCopies {
		_ = c.WriteTo(reply, to)
	}
}

func closeAll(conns []*datapath.PunchSocket, keep *datapath.PunchSocket) {
	for _, c := range conns {
		if c != keep {
			c.Close()
		}
	}
}

// birthdaySprayWonLocked makes the won socket the peer's path: WireGuard
// sends for the peer through it (Bind routes the peer's address there,
// as for a relay) and what arrives on it from the peer goes to WireGuard.
func (p *peer) birthdaySprayWonLocked(c *datapath.PunchSocket, from netip.AddrPort) {
	bd := &p.bd
	took := time.Since(bd.started)
	bd.running = false
	bd.result = fmt.Sprintf("direct after birthday punch: %.1f s, %d sockets", took.Seconds(), bd.sockets)
	l := &p.punched
	p.dropPunchedLocked("")
	_ = c.SetReadDeadline(time.Time{})
	l.relayEP = p.a.bind.RoutePunched(c, from)
	l.sock = c
	local := c.LocalAddr()
	l.local = hostCandidate(local)
	l.remote = srflxCandidate(from)
	l.endpoint, l.selected, l.started = from, true, time.Now()
	p.log.Info("birthday punch: a probe reached one of our sockets", "from", from.String(), "local", local.String(), "took", took.Round(time.Millisecond).String())
	go p.readPunched(l.relayEP, c, from, bd.tok)
	p.applyLocked(p.reconsiderLocked("birthday punch"))
}

// birthdayProbeWonLocked (easy side): a mapping of the peer answered at
// to; WireGuard sends there from the shared socket.
func (p *peer) birthdayProbeWonLocked(to netip.AddrPort, probes int64) {
	bd := &p.bd
	took := time.Since(bd.started)
	bd.running, bd.retry, bd.quick = false, 0, 0
	bd.result = fmt.Sprintf("direct after birthday punch: %.1f s, %s probes", took.Seconds(), thousands(probes))
	p.log.Info("birthday punch: the peer's mapping answered", "at", to.String(), "took", took.Round(time.Millisecond).String(), "probes", probes)
	l := &p.punched
	p.dropPunchedLocked("")
	l.local = hostCandidate(netip.AddrPortFrom(netip.IPv4Unspecified(), p.a.bind.Port()))
	l.remote = prflxCandidate(to)
	l.endpoint, l.selected, l.started = to, true, time.Now()
	go p.birthdayHeartbeat(bd.tok, to) // birthdayheart.go
	p.applyLocked(p.reconsiderLocked("birthday punch"))
}

// applyLocked runs a WireGuard change from reconsiderLocked off the lock.
func (p *peer) applyLocked(apply func()) {
	if apply != nil {
		go apply()
	}
}

// readPunched hands what the peer sends to the won socket to WireGuard,
// and answers repeated probes (the easy side's heartbeat), until the
// socket closes.
func (p *peer) readPunched(ep *datapath.Endpoint, c *datapath.PunchSocket, peerAddr netip.AddrPort, tok bdayToken) {
	err := c.Serve(p.a.bind.Bind, ep, peerAddr, p.heardPunched, func(b []byte) { // birthdayheart.go
		if classify(b) != kindBirthday {
			return
		}
		if typ, got, ok := parseBdayPacket(b); ok && typ == bdayProbeType && got == tok {
			answerProbe(c, tok, peerAddr)
		}
	})
	p.mu.Lock()
	if p.punched.sock == c {
		p.dropPunchedLocked("birthday socket: " + err.Error())
	}
	p.mu.Unlock()
}

// dropPunchedLocked takes the birthday path down (why "" when a new one
// replaces it).
func (p *peer) dropPunchedLocked(why string) {
	l := &p.punched
	if l.relayEP != nil {
		p.a.bind.Unroute(l.relayEP)
		l.relayEP = nil
	}
	if l.sock != nil {
		l.sock.Close()
		l.sock = nil
	}
	was := l.selected
	l.selected = false
	if why != "" && was {
		p.log.Info("birthday path down", "why", why)
		p.applyLocked(p.reconsiderLocked(why))
	}
}

func hostCandidate(ap netip.AddrPort) ice.Candidate {
	c, _ := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: ap.Addr().String(), Port: int(ap.Port()), Component: 1})
	return c
}

func srflxCandidate(ap netip.AddrPort) ice.Candidate {
	c, _ := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{Network: "udp", Address: ap.Addr().String(), Port: int(ap.Port()), Component: 1, RelAddr: "0.0.0.0", RelPort: 0})
	return c
}

func prflxCandidate(ap netip.AddrPort) ice.Candidate {
	c, _ := ice.NewCandidatePeerReflexive(&ice.CandidatePeerReflexiveConfig{Network: "udp", Address: ap.Addr().String(), Port: int(ap.Port()), Component: 1, RelAddr: "0.0.0.0", RelPort: 0})
	return c
}

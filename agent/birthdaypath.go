package agent

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"golang.org/x/sys/unix"

	"github.com/meshvpn/meshvpn/control"
)

// lanePunched names the path a birthday punch found. It is a lane without
// an ICE session: up while its socket works; peer.reconsiderLocked puts
// it after the direct lane and before the relay.
const lanePunched = "punched"

// openBdaySockets opens up to birthdaySockets IPv4 sockets; each sends
// one opening packet to dest with the given TTL, then goes back to the
// default TTL for what it carries later.
func openBdaySockets(dest netip.AddrPort, ttl int) []*net.UDPConn {
	to := net.UDPAddrFromAddrPort(dest)
	var conns []*net.UDPConn
	for range birthdaySockets {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			break // out of descriptors or ports: spray with what we have
		}
		if err := setTTL(c, ttl); err != nil {
			c.Close()
			break
		}
		_, werr := c.WriteToUDP(openingPayload, to)
		if err := setTTL(c, 64); err != nil || werr != nil {
			c.Close()
			continue
		}
		conns = append(conns, c)
	}
	return conns
}

func setTTL(c *net.UDPConn, ttl int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
	}); err != nil {
		return err
	}
	return serr
}

// bdayWin is the socket a probe reached, and the probe's source.
type bdayWin struct {
	c    *net.UDPConn
	from netip.AddrPort
}

// birthdaySpray (symmetric side) opens the sockets, tells the peer, and
// waits for the first probe that names the attempt and comes from the
// peer's address; that socket answers and is kept, the rest are closed.
func (p *peer) birthdaySpray(tok bdayToken, dest netip.AddrPort, ttl int, stop <-chan struct{}) {
	defer p.a.sprays.Add(-1)
	conns := openBdaySockets(dest, ttl)
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
func awaitProbe(c *net.UDPConn, tok bdayToken, ip netip.Addr, deadline time.Time, win chan<- bdayWin) {
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
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

func answerProbe(c *net.UDPConn, tok bdayToken, to netip.AddrPort) {
	reply := bdayPacket(bdayReplyType, tok)
	for range bdayReplyCopies {
		_, _ = c.WriteToUDPAddrPort(reply, to)
	}
}

func closeAll(conns []*net.UDPConn, keep *net.UDPConn) {
	for _, c := range conns {
		if c != keep {
			c.Close()
		}
	}
}

// sockWriter writes WireGuard messages for one peer from the socket a
// birthday punch won.
type sockWriter struct {
	c  *net.UDPConn
	to netip.AddrPort
}

func (w *sockWriter) Write(b []byte) (int, error) { return w.c.WriteToUDPAddrPort(b, w.to) }

// birthdaySprayWonLocked makes the won socket the peer's path: WireGuard
// sends for the peer through it (Bind routes the peer's address there,
// as for a relay) and what arrives on it from the peer goes to WireGuard.
func (p *peer) birthdaySprayWonLocked(c *net.UDPConn, from netip.AddrPort) {
	bd := &p.bd
	took := time.Since(bd.started)
	bd.running = false
	bd.result = fmt.Sprintf("direct after birthday punch: %.1f s, %d sockets", took.Seconds(), bd.sockets)
	l := &p.punched
	p.dropPunchedLocked("")
	_ = c.SetReadDeadline(time.Time{})
	l.relayEP = p.a.bind.relays.add(from, &sockWriter{c: c, to: from})
	l.sock = c
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
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
func (p *peer) readPunched(ep *relayEndpoint, c *net.UDPConn, peerAddr netip.AddrPort, tok bdayToken) {
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			p.mu.Lock()
			if p.punched.sock == c {
				p.dropPunchedLocked("birthday socket: " + err.Error())
			}
			p.mu.Unlock()
			return
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != peerAddr {
			continue
		}
		p.heardPunched() // birthdayheart.go
		switch classify(buf[:n]) {
		case kindWireGuard:
			p.a.bind.relays.deliver(buf[:n], ep)
		case kindBirthday:
			if typ, got, ok := parseBdayPacket(buf[:n]); ok && typ == bdayProbeType && got == tok {
				answerProbe(c, tok, peerAddr)
			}
		}
	}
}

// dropPunchedLocked takes the birthday path down (why "" when a new one
// replaces it).
func (p *peer) dropPunchedLocked(why string) {
	l := &p.punched
	if l.relayEP != nil {
		p.a.bind.relays.remove(l.relayEP)
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

package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/agent/datapath"
	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// Relay client modes (Config.RelayClient, --relay-client).
const (
	RelayClientPerPeer = "per-peer" // one pion/ice relay session and allocation per peer
	RelayClientShared  = "shared"   // one allocation per agent (datapath/relayclient.go)
)

// signalRelayAddr tells a peer the sender's relayed address on its shared
// allocation (Candidate) and the peer's as the sender knows it (Session),
// which acknowledges the peer's own announcement.
const signalRelayAddr = "relay-addr"

const (
	// relayAddrResend: an announcement not acknowledged is sent again,
	// doubling up to relayAddrResendMax (a peer that runs per-peer
	// sessions never answers).
	relayAddrResend    = 2 * time.Second
	relayAddrResendMax = 32 * time.Second
	// relayReaskAfter: a relayed path WireGuard finds silent this long is
	// asked about again (the peer may have a new allocation).
	relayReaskAfter = 5 * time.Second
)

// relayClient is the shared client's allocation, on relay t.
type relayClient struct {
	*datapath.RelayClient
	t relayTarget
}

// sharedRelay is the agent's one relay client, replaced when it dies or
// the chosen relay changes.
type sharedRelay struct {
	a  *Agent
	mu sync.Mutex
	c  *relayClient
	// opening: an allocation is being made.
	opening bool
	// failures counts the attempts since the last client that lasted
	// (relayStable); the next is not before retryAt (relayRetryDelay).
	failures int
	retryAt  time.Time
	openedAt time.Time
}

const (
	// relayRetryFast attempts follow one a second (a cut stream heals
	// quickly), then the wait doubles up to relayRetryMax: a relay that
	// refuses or drops every connection costs a connection and a warning
	// that often, until the next probe says it is gone.
	relayRetryFast = 5
	relayRetryMax  = 30 * time.Second
	// relayStable: a client that lived this long resets the count.
	relayStable = time.Minute
)

// relayRetryDelay is the wait before the attempt after n failed ones.
func relayRetryDelay(n int) time.Duration {
	if n < relayRetryFast {
		return time.Second
	}
	return min(time.Second<<min(n-relayRetryFast+1, 6), relayRetryMax)
}

// sharedRelayOn tells whether relayed paths use the shared client: the
// mode asks for it and the chosen relay fits (sharedRelayFits).
func (a *Agent) sharedRelayOn() bool {
	if a.cfg.RelayClient != RelayClientShared {
		return false
	}
	return sharedRelayFits(a.relays.choice())
}

// server is what the shared client needs of t.
func (t *relayTarget) server() datapath.RelayServer {
	return datapath.RelayServer{URL: t.URL, Server: t.Server, Transport: t.Transport, Username: t.Username, Password: t.Password}
}

// relayServer is what the shared client needs of t, with the agent's
// dialer for a TCP or TLS relay: it dials t.Server, from the coordinator's
// relay list, and nothing a peer names (a peer's relayed address only ever
// gets a channel on this stream).
func (a *Agent) relayServer(t relayTarget) datapath.RelayServer {
	s := t.server()
	if t.Transport != "udp" {
		s.Dial = func(ctx context.Context) (net.Conn, error) { return a.dialRelay(ctx, t) }
	}
	return s
}

// sharedRelayFits tells whether the shared client can use relay t: over
// UDP, TCP or TLS, on an IPv4 server (the client's socket is IPv4, and it
// asks for the relay's default family; an IPv6-only host reaches its relay
// over IPv6 through the per-peer ICE sessions, which ask for an IPv4
// relayed address, RFC 6156).
func sharedRelayFits(t *relayTarget) bool {
	if t == nil {
		return false
	}
	switch t.Transport {
	case "udp", "tcp", "tls":
	default:
		return false
	}
	if ap, err := netip.ParseAddrPort(t.Server); err == nil && !ap.Addr().Unmap().Is4() {
		return false
	}
	return true
}

// current is the live client, nil when there is none yet.
func (s *sharedRelay) current() *relayClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil || s.c.Dead() {
		return nil
	}
	return s.c
}

// tick keeps the allocation warm: opened as soon as a relay works,
// reopened when it dies or the chosen relay changes, given fresh
// credentials when the coordinator sends them.
func (s *sharedRelay) tick(now time.Time) {
	if !s.a.sharedRelayOn() {
		s.close()
		return
	}
	t := s.a.relays.choice()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil && !s.c.Dead() && s.c.t.URL == t.URL {
		s.c.SetCredentials(t.Username, t.Password)
		if now.Sub(s.openedAt) >= relayStable {
			s.failures = 0
		}
		return
	}
	if s.opening || now.Before(s.retryAt) {
		return
	}
	if s.c != nil && s.c.t.URL != t.URL {
		s.failures = 0 // another relay: a fresh start
	}
	s.opening = true
	s.retryAt = now.Add(relayRetryDelay(s.failures))
	s.failures++
	old := s.c
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), relayProbeTimeout)
		defer cancel()
		dc, err := datapath.NewRelayClient(ctx, s.a.log, s.a.relayServer(*t), s.a.bind.Bind)
		var c *relayClient
		s.mu.Lock()
		s.opening = false
		if err == nil {
			c = &relayClient{RelayClient: dc, t: *t}
			s.c = c
			s.openedAt = now
		}
		s.mu.Unlock()
		if old != nil {
			old.Close()
		}
		if err != nil {
			s.a.log.Warn("shared relay allocation failed", "relay", t.URL, "err", err)
			return
		}
		s.a.log.Info("shared relay allocation", "relay", t.URL, "relayed", c.RelayedAddr().String())
	}()
}

func (s *sharedRelay) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// sharedPeer is a peer's state on the shared client, guarded by the
// peer's mutex.
type sharedPeer struct {
	peerAddr netip.AddrPort // the peer's relayed address, from its signal
	sent     netip.AddrPort // our relayed address last announced
	acked    bool           // the peer has echoed our current address
	unacked  int            // announcements since the last acknowledgement
	nextSend time.Time
	ch       *datapath.RelayChan // bound channel to peerAddr
	binding  bool
	reasked  time.Time
	// iceWanted: the peer runs a per-peer ICE relay session with us (its
	// relay is TCP or TLS, or it runs per-peer): our relay lane answers it.
	iceWanted bool
	// silent: WireGuard gets no answer through the channel.
	silent bool
	// changes charges the peer's changes of relayed address.
	changes ratelimit.Bucket
}

// noteRelayICELocked turns the relay lane's ICE session on for a peer
// that asks for one.
func (p *peer) noteRelayICELocked(kind string) {
	if kind == control.SignalOffer || kind == control.SignalRestart {
		p.shared.iceWanted = true
	}
}

// sharedTickLocked announces our relayed address until the peer has it,
// binds a channel to the peer's, and puts the relay lane up once bound.
func (p *peer) sharedTickLocked(now time.Time) {
	if !p.a.sharedRelayOn() {
		// The relay no longer fits the shared client (an IPv6 server, or
		// per-peer mode): the per-peer ICE session takes the lane over.
		if p.relay.shared {
			p.dropSharedChanLocked(true)
			p.relay.shared = false
		}
		return
	}
	sp := &p.shared
	c := p.a.shared.current()
	l := &p.relay
	if c == nil || (sp.ch != nil && sp.ch.Client() != c.RelayClient) {
		p.dropSharedChanLocked(c == nil)
		if c == nil {
			return
		}
	}
	ours := c.RelayedAddr()
	if ours != sp.sent {
		sp.acked = false
		sp.nextSend = time.Time{}
	}
	p.sharedLivenessLocked(now)
	// WireGuard finds the relayed path silent: ask the peer again, its
	// allocation may be new.
	if p.active == l && sp.ch != nil && now.Sub(sp.reasked) > relayReaskAfter {
		if v, quiet := p.live.judge(now); v != pathAnswers && quiet > relayReaskAfter {
			sp.reasked = now
			sp.acked = false
			sp.nextSend = time.Time{}
		}
	}
	if !sp.acked && !now.Before(sp.nextSend) {
		p.sendRelayAddrLocked(ours, now)
	}
	if sp.peerAddr.IsValid() && sp.ch == nil && !sp.binding {
		sp.binding = true
		peerAddr := sp.peerAddr
		go p.bindShared(c, peerAddr)
	}
}

// relaySilentAfter: WireGuard sending on the relayed path this long with
// nothing back takes the relay lane down, as ICE's consent checks do for
// the per-peer sessions (iceDisconnected).
const relaySilentAfter = iceDisconnected

// sharedLivenessLocked takes the shared relay lane down while WireGuard
// gets no answer through it, and up again when answers come. Silence is
// counted from when the relay became the path, not from a direct path's
// last answer.
func (p *peer) sharedLivenessLocked(now time.Time) {
	l, sp := &p.relay, &p.shared
	if !l.shared || sp.ch == nil {
		return
	}
	switch {
	case sp.silent && p.live.unanswered.IsZero():
		sp.silent = false
		l.selected = true
		if apply := p.reconsiderLocked("relay answers again"); apply != nil {
			go apply()
		}
	case !sp.silent && p.active == l && !p.live.unanswered.IsZero() &&
		now.Sub(later(p.live.unanswered, p.changedAt)) >= relaySilentAfter:
		sp.silent = true
		l.selected = false
		sp.ch.Client().CheckSoon()
		p.reconsiderLocked("relay silent")
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (p *peer) sendRelayAddrLocked(ours netip.AddrPort, now time.Time) {
	sp := &p.shared
	sp.sent = ours
	sp.nextSend = now.Add(min(relayAddrResend<<min(sp.unacked, 4), relayAddrResendMax))
	sp.unacked++
	var theirs string
	if sp.peerAddr.IsValid() {
		theirs = sp.peerAddr.String()
	}
	p.a.sendSignal(control.Signal{To: p.id, Lane: control.LaneRelay, Kind: signalRelayAddr, Candidate: ours.String(), Session: theirs})
}

// bindShared binds a channel to the peer's relayed address, outside the
// peer's lock (it waits for the relay's answer).
func (p *peer) bindShared(c *relayClient, peerAddr netip.AddrPort) {
	ch, err := c.Channel(peerAddr)
	p.mu.Lock()
	sp := &p.shared
	sp.binding = false
	if p.closed || sp.peerAddr != peerAddr || p.a.shared.current() != c {
		p.mu.Unlock()
		if err == nil {
			c.DropChannel(peerAddr) // the peer moved on meanwhile
		}
		return
	}
	if err != nil {
		p.mu.Unlock()
		p.a.logLimit.Log(p.log, slog.LevelInfo, "shared relay channel", "peer_relayed", peerAddr.String(), "err", err)
		return
	}
	sp.ch = ch
	ch.SetRoam(&p.roam)
	sp.silent = false
	l := &p.relay
	// The peer's relayed address as before, on our new allocation (the
	// old one was lost): WireGuard holds the old channel's route for that
	// address and reconsider sees no change, so hand it the new route.
	rebound := p.active == l && p.endpoint == peerAddr && p.wgAdded
	p.a.bind.Reroute(ch.Endpoint())
	l.relayEP = ch.Endpoint()
	l.target = c.t
	l.endpoint = peerAddr
	l.selected = true
	l.shared = true
	l.everUp = true
	apply := p.reconsiderLocked("relay channel bound")
	if apply == nil && rebound && p.active == l {
		apply = func() { p.rerouteWG(l, peerAddr) }
	}
	p.mu.Unlock()
	if apply != nil {
		apply()
	}
}

// rerouteWG makes WireGuard parse ep again, now routed through a new
// channel, if ep on l is still the peer's path.
func (p *peer) rerouteWG(l *lane, ep netip.AddrPort) {
	err := p.wgChange(func() error {
		if !p.current(l, ep) {
			return nil
		}
		return p.a.wg.setEndpoint(p.key, ep, false)
	})
	if err != nil {
		p.log.Error("reroute WireGuard through the new relay channel", "err", err)
	}
}

// dropSharedChanLocked takes the relay lane down when its channel is gone.
func (p *peer) dropSharedChanLocked(forgetPeer bool) {
	sp := &p.shared
	if sp.ch != nil {
		p.a.bind.Unroute(sp.ch.Endpoint())
		sp.ch.Client().DropChannel(sp.ch.Peer())
		sp.ch = nil
	}
	if forgetPeer {
		sp.sent = netip.AddrPort{}
	}
	if p.relay.shared {
		p.relay.selected = false
		p.relay.relayEP = nil
	}
}

// relayAddrSignalLocked takes the peer's relayed address.
func (p *peer) relayAddrSignalLocked(s *control.Signal) {
	if !p.a.sharedRelayOn() {
		return
	}
	addr, err := netip.ParseAddrPort(s.Candidate)
	if err != nil || !addr.Addr().IsGlobalUnicast() || addr.Port() == 0 {
		p.log.Debug("bad relayed address from peer")
		return
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !p.a.relayAddrAllowed(addr.Addr()) {
		p.a.logLimit.Log(p.log, slog.LevelInfo, "peer's relayed address is on no relay of the mesh; ignoring", "peer_relayed", addr.String())
		return
	}
	sp := &p.shared
	if addr != sp.peerAddr {
		// Each new address costs a channel on our allocation: a peer
		// cycling through addresses would use up the channel numbers.
		if ok, _ := peerStartRate.Take(&sp.changes, time.Now()); !ok {
			p.a.logLimit.Log(p.log, slog.LevelInfo, "peer changes its relayed address too often; ignoring")
			return
		}
		p.dropSharedChanLocked(false)
		sp.peerAddr = addr
		sp.acked = false
		sp.nextSend = time.Time{}
	}
	c := p.a.shared.current()
	if c == nil {
		return
	}
	ours := c.RelayedAddr()
	sp.unacked = 0
	if s.Session == ours.String() {
		sp.acked = true
	} else {
		sp.acked = false
		p.sendRelayAddrLocked(ours, time.Now())
	}
	if sp.ch == nil && !sp.binding {
		sp.binding = true
		go p.bindShared(c, addr)
	}
}

// relayAddrAllowed tells whether a peer's relayed address may be on IP ip.
// A member names its own relayed address: taken as is, a stranger's
// address would get a channel on our allocation and WireGuard's handshake
// initiations through the relay. So it must be where a relay of the mesh
// relays from: a relay server's IP in our list, where our probe
// allocation on one came from (a hosted TURN service may relay from other
// IPs than its server's), our own allocation's, or our peer relay's.
func (a *Agent) relayAddrAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	if a.relayPeerOK(ip) {
		return true
	}
	for _, c := range a.relays.snapshot() {
		if c.RelayedIP == ip {
			return true
		}
	}
	if c := a.shared.current(); c != nil && c.RelayedAddr().Addr().Unmap() == ip {
		return true
	}
	if pr := a.relaySrv.Load(); pr != nil {
		if ap, err := netip.ParseAddrPort(pr.public); err == nil && ap.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

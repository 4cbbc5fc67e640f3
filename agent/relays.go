package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/agent/datapath"
	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/cabundle"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// relayTarget is the relay a relay session allocates on.
type relayTarget struct {
	control.Relay
	// Transport is how the agent reaches the server: udp, tcp or tls.
	Transport string
	// Server is the server's host:port.
	Server string
	// IPv6: the server is reached over IPv6 (found by the probe; ice6.go).
	IPv6 bool
	// RelayedIP is the IP of the probe's allocation: where the relay
	// relays from, which a hosted TURN service may put on other IPs than
	// the server's (relayAddrAllowed).
	RelayedIP netip.Addr
}

// relayCheck is what the last probe of one relay found.
type relayCheck struct {
	relayTarget
	OK      bool
	Err     string
	RTT     time.Duration
	Checked time.Time
}

// Relay probing: each relay the coordinator lists gets a test allocation
// (which proves reachability over its transport and that the credential
// works), so status can say why relaying is unavailable and relay sessions
// use one relay that works, preferring UDP, then TCP, then TLS.
const (
	relayProbeTimeout = 5 * time.Second
	relayRecheckBad   = 30 * time.Second
	relayRecheckGood  = 10 * time.Minute
)

type relayManager struct {
	a *Agent

	mu      sync.Mutex
	checks  []relayCheck
	gen     int // bumped on every new list; stale probe results are dropped
	probing bool
	next    time.Time
}

// set takes a new relay list from the coordinator. Fresh credentials for
// the same servers keep the probe results; a different set of servers is
// probed again.
func (m *relayManager) set(list []control.Relay) {
	targets := make([]relayTarget, 0, len(list))
	for _, r := range list {
		t, err := parseRelay(r)
		if err != nil {
			m.a.log.Warn("relay from coordinator ignored", "url", r.URL, "err", err)
			continue
		}
		targets = append(targets, t)
	}
	m.mu.Lock()
	same := len(targets) == len(m.checks)
	for i := 0; same && i < len(targets); i++ {
		same = targets[i].URL == m.checks[i].URL
	}
	if same {
		for i := range targets {
			targets[i].IPv6, targets[i].RelayedIP = m.checks[i].IPv6, m.checks[i].RelayedIP
			m.checks[i].relayTarget = targets[i]
		}
		m.mu.Unlock()
		m.a.refreshRelaySessions()
		return
	}
	m.gen++
	m.checks = make([]relayCheck, len(targets))
	for i, t := range targets {
		m.checks[i] = relayCheck{relayTarget: t, Err: "not checked yet"}
	}
	m.next = time.Time{}
	m.mu.Unlock()
	m.tick(time.Now())
}

// tick starts a probe round when one is due.
func (m *relayManager) tick(now time.Time) {
	m.mu.Lock()
	if m.probing || len(m.checks) == 0 || now.Before(m.next) {
		m.mu.Unlock()
		return
	}
	m.probing = true
	gen := m.gen
	todo := slices.Clone(m.checks)
	m.mu.Unlock()
	go m.probe(gen, todo)
}

func (m *relayManager) probe(gen int, todo []relayCheck) {
	var wg sync.WaitGroup
	for i := range todo {
		wg.Go(func() {
			start := time.Now()
			err := m.a.probeRelay(&todo[i].relayTarget)
			todo[i].Checked = time.Now()
			todo[i].OK = err == nil
			todo[i].Err = ""
			if err != nil {
				todo[i].Err = err.Error()
			} else {
				// An allocation is two round trips: the 401 and the grant.
				todo[i].RTT = time.Since(start) / 2
			}
		})
	}
	wg.Wait()
	m.mu.Lock()
	if gen != m.gen {
		m.probing = false
		m.mu.Unlock()
		return
	}
	hadUsable := m.choiceLocked() != nil
	m.checks = todo
	m.probing = false
	wait := relayRecheckGood
	for _, c := range todo {
		if !c.OK {
			wait = relayRecheckBad
		}
	}
	m.next = time.Now().Add(wait)
	choice := m.choiceLocked()
	m.mu.Unlock()
	for _, c := range todo {
		if c.OK {
			m.a.log.Info("relay available", "url", c.URL, "transport", c.Transport, "rtt", c.RTT.Round(time.Millisecond))
		} else {
			m.a.log.Warn("relay unavailable", "url", c.URL, "transport", c.Transport, "err", c.Err)
		}
	}
	if choice != nil && !hadUsable {
		m.a.kickPeers()
	}
}

// choiceLocked is the relay sessions allocate on: of the working relays
// over the most preferred transport (UDP, then TCP, then TLS), the one
// with the shortest round trip measured by the last probe, so a peer relay
// near this node beats a far server (and the reverse).
func (m *relayManager) choiceLocked() *relayTarget {
	for _, tr := range []string{"udp", "tcp", "tls"} {
		best := -1
		for i := range m.checks {
			if m.checks[i].OK && m.checks[i].Transport == tr && (best < 0 || m.checks[i].RTT < m.checks[best].RTT) {
				best = i
			}
		}
		if best >= 0 {
			t := m.checks[best].relayTarget
			return &t
		}
	}
	return nil
}

func (m *relayManager) choice() *relayTarget {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.choiceLocked()
}

func (m *relayManager) snapshot() []relayCheck {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.checks)
}

// parseRelay reads a relay's URL.
func parseRelay(r control.Relay) (relayTarget, error) {
	u, err := stun.ParseURI(r.URL)
	if err != nil {
		return relayTarget{}, err
	}
	t := relayTarget{Relay: r, Server: net.JoinHostPort(u.Host, fmt.Sprint(u.Port))}
	switch {
	case u.Scheme == stun.SchemeTypeTURN && u.Proto == stun.ProtoTypeUDP:
		t.Transport = "udp"
	case u.Scheme == stun.SchemeTypeTURN && u.Proto == stun.ProtoTypeTCP:
		t.Transport = "tcp"
	case u.Scheme == stun.SchemeTypeTURNS && u.Proto == stun.ProtoTypeTCP:
		t.Transport = "tls"
	default:
		return relayTarget{}, errors.New("want turn:...?transport=udp|tcp or turns:...?transport=tcp")
	}
	return t, nil
}

// relayChoice is the relay for new relay sessions, as a list for callers
// that only ask whether there is one.
func (a *Agent) relayChoice() []relayTarget {
	if t := a.relays.choice(); t != nil {
		return []relayTarget{*t}
	}
	return nil
}

// dialRelay opens the stream to a TCP or TLS relay. TLS is verified against
// the system roots plus the agent's --ca-file and the relay's advertised CA.
func (a *Agent) dialRelay(ctx context.Context, t relayTarget) (net.Conn, error) {
	d := net.Dialer{Timeout: relayProbeTimeout}
	c, err := d.DialContext(ctx, t.network("tcp"), t.Server)
	if err != nil {
		return nil, err
	}
	if t.Transport != "tls" {
		return c, nil
	}
	cfg, err := a.relayTLS(t)
	if err != nil {
		c.Close()
		return nil, err
	}
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, relayProbeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		// Whoever answers picks the certificate, whose names the error
		// lists (up to 99): status shows it and the log repeats it.
		return nil, fmt.Errorf("TLS to relay %s: %s", t.Server, logsafe.ClipN(err.Error(), 200))
	}
	return tc, nil
}

func (a *Agent) relayTLS(t relayTarget) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if a.cfg.CAFile != "" {
		if err := cabundle.Append(pool, a.cfg.CAFile); err != nil {
			return nil, err
		}
	}
	if t.CA != "" && !pool.AppendCertsFromPEM([]byte(t.CA)) {
		a.log.Warn("relay CA from coordinator holds no certificate", "url", t.URL)
	}
	host, _, _ := net.SplitHostPort(t.Server)
	return &tls.Config{ServerName: host, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// probeRelay makes and drops one allocation on t, over the family it
// finds for t (t.IPv6).
func (a *Agent) probeRelay(t *relayTarget) error {
	ctx, cancel := context.WithTimeout(context.Background(), relayProbeTimeout)
	defer cancel()
	v6, err := relayIPv6(ctx, t.Server)
	if err != nil {
		return err
	}
	t.IPv6 = v6
	// An IPv4 relay address whichever family reaches the server, as the
	// relay lane asks (ice6.go).
	cc := &turn.ClientConfig{Username: t.Username, Password: t.Password, LoggerFactory: a.pion,
		RequestedAddressFamily: turn.RequestedAddressFamilyIPv4}
	if t.Transport == "udp" {
		server, err := net.ResolveUDPAddr(t.network("udp"), t.Server)
		if err != nil {
			return fmt.Errorf("resolve: %w", err)
		}
		pc, err := net.ListenPacket(t.network("udp"), ":0")
		if err != nil {
			return fmt.Errorf("open UDP socket: %w", err)
		}
		defer pc.Close()
		cc.Conn = pc
		cc.TURNServerAddr = server.String()
		cc.STUNServerAddr = server.String()
	} else {
		c, err := a.dialRelay(ctx, *t)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		defer c.Close()
		cc.Conn = turn.NewSTUNConn(c)
	}
	client, err := turn.NewClient(cc)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		return err
	}
	relayed, err := client.AllocateWithContext(ctx)
	if err != nil {
		return datapath.ExplainTURNError(err, ctx)
	}
	if ua, ok := relayed.LocalAddr().(*net.UDPAddr); ok {
		t.RelayedIP = ua.AddrPort().Addr().Unmap()
	}
	relayed.Close()
	return nil
}

// relayDialer lets pion's relay gathering reach TCP and TLS relays through
// dialRelay, whose TLS verification pion cannot be given otherwise.
type relayDialer struct {
	a *Agent
	t relayTarget
}

func (d relayDialer) Dial(network, addr string) (net.Conn, error) {
	if addr != d.t.Server {
		return nil, fmt.Errorf("relay dialer: unexpected address %s", addr)
	}
	return d.a.dialRelay(context.Background(), d.t)
}

// newRelayICEAgent makes the ICE agent of a relay session: only relay
// candidates, on the preferred working relay.
func (a *Agent) newRelayICEAgent() (*ice.Agent, relayTarget, error) {
	t := a.relays.choice()
	if t == nil {
		return nil, relayTarget{}, errors.New("no relay available")
	}
	u, err := stun.ParseURI(t.URL)
	if err != nil {
		return nil, relayTarget{}, err
	}
	u.Username, u.Password = t.Username, t.Password
	opts := append(a.iceOptions(),
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithTURNTransportProtocols(t.turnTransports()),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeRelay}),
		ice.WithUrls([]*stun.URI{u}),
		ice.WithRelayAcceptanceMinWait(0),
	)
	if t.Transport != "udp" {
		opts = append(opts, ice.WithProxyDialer(relayDialer{a: a, t: *t}))
	}
	agent, err := ice.NewAgentWithOptions(opts...)
	return agent, *t, err
}

// refreshRelaySessions moves idle relay sessions to fresh credentials.
func (a *Agent) refreshRelaySessions() {
	for _, p := range a.peerList() {
		p.restartRelay()
	}
}

// kickPeers starts negotiating on every lane that is down, e.g. when the
// first relay becomes usable.
func (a *Agent) kickPeers() {
	for _, p := range a.peerList() {
		p.kick()
	}
}

func (a *Agent) peerList() []*peer {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*peer, 0, len(a.peers))
	for _, p := range a.peers {
		out = append(out, p)
	}
	return out
}

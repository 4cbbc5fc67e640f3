// Package netcheck measures what the network does to UDP: whether it gets
// out at all, the public address it gets, whether the NAT's mapping depends
// on the destination, what the NAT lets in, and so the NAT type in the words
// users know (full cone, restricted cone, port-restricted cone, symmetric).
//
// It uses STUN servers only (RFC 5389 Binding, RFC 5780 CHANGE-REQUEST and
// OTHER-ADDRESS), from two UDP sockets (one for the mapping, one for the
// filtering tests, see tester.run), and needs no running agent.
package netcheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// DefaultProbeTimeout bounds one STUN exchange; a filtering test that gets
// no answer in this time counts as filtered.
const DefaultProbeTimeout = 2 * time.Second

// Config says what to measure against.
type Config struct {
	// STUN servers, the first with an alternate address (or one that
	// answers with OTHER-ADDRESS) is used for the mapping and filtering
	// tests.
	STUN []control.STUNServer
	// STUN6 are IPv6 STUN servers: netcheck asks the first that answers
	// for this host's public IPv6 endpoint (Report.IPv6). IPv6 addresses
	// given in STUN are moved here.
	STUN6 []control.STUNServer
	// TURN servers (host:port) whose latency is measured with a STUN
	// Binding request.
	TURN []string
	// ProbeTimeout bounds one exchange; DefaultProbeTimeout when zero.
	ProbeTimeout time.Duration
	// PortMapProbe, when set, asks the gateway which port-mapping protocols
	// it offers. It runs alongside the STUN tests. Nil reports "not probed".
	PortMapProbe func(ctx context.Context) (PortMapResult, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// PortMapResult is what a port-mapping probe found on the gateway.
type PortMapResult struct {
	UPnP   bool `json:"upnp"`
	NATPMP bool `json:"nat_pmp"`
	PCP    bool `json:"pcp"`
	// Protocol and External describe a mapping the probe made, if any.
	Protocol string `json:"protocol,omitempty"`
	External string `json:"external,omitempty"`
}

// PortMapReport is the port-mapping part of a Report.
type PortMapReport struct {
	Probed bool `json:"probed"`
	PortMapResult
	Error string `json:"error,omitempty"`
}

// Server kinds in a Report.
const (
	KindSTUN          = "stun"
	KindSTUNAlternate = "stun-alternate"
	KindTURN          = "turn"
)

// ServerReport is one server as netcheck saw it.
type ServerReport struct {
	Addr string `json:"addr"`
	Kind string `json:"kind"`
	// LatencyMs is the round-trip time of a Binding exchange; absent when
	// the server did not answer.
	LatencyMs *float64 `json:"latency_ms,omitempty"`
	// Mapped is the public address the server saw.
	Mapped string `json:"mapped,omitempty"`
	Error  string `json:"error,omitempty"`

	seq int // listing order: the order servers were given
}

// BindingReport is one plain Binding exchange of the NAT tests.
type BindingReport struct {
	Dest   string `json:"dest"`
	Mapped string `json:"mapped,omitempty"`
}

// Tests shows the raw observations behind the verdict.
type Tests struct {
	Bindings []BindingReport `json:"bindings"`
	// ChangeIPPort and ChangePort are "answered", "silent" or "not tested".
	ChangeIPPort       string `json:"change_ip_port"`
	ChangeIPPortReason string `json:"change_ip_port_reason,omitempty"`
	ChangePort         string `json:"change_port"`
	ChangePortReason   string `json:"change_port_reason,omitempty"`
}

// Report is the result of a Run.
type Report struct {
	UDP bool `json:"udp"`
	// PublicEndpoint is the public address:port the first answering STUN
	// server saw; PublicIP its address.
	PublicIP       string `json:"public_ip,omitempty"`
	PublicEndpoint string `json:"public_endpoint,omitempty"`
	LocalPort      uint16 `json:"local_port"`
	// MappingVariesByDestination is null when it could not be tested.
	MappingVariesByDestination *bool  `json:"mapping_varies_by_destination"`
	Mapping                    string `json:"mapping"`
	Filtering                  string `json:"filtering"`
	NATType                    string `json:"nat_type"`
	// Reason explains an unknown NAT type or an untested behaviour.
	Reason string `json:"reason,omitempty"`
	// IPv4Unavailable says why IPv4 could not be tested at all (no IPv4
	// STUN server, or no IPv4 route: an IPv6-only host); empty otherwise.
	IPv4Unavailable string `json:"ipv4_unavailable,omitempty"`
	// IPv6 is the IPv6 test; Tested is false without an IPv6 STUN server.
	IPv6        IPv6Report     `json:"ipv6"`
	PortMapping PortMapReport  `json:"port_mapping"`
	Servers     []ServerReport `json:"servers"`
	Tests       Tests          `json:"tests"`
}

// Run measures the network. It fails only when it cannot start (no server,
// no socket); servers that cannot be resolved or do not answer are
// reported.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.STUN, cfg.STUN6 = splitFamilies(cfg.STUN, cfg.STUN6)
	if len(cfg.STUN) == 0 && len(cfg.STUN6) == 0 {
		return nil, errors.New("netcheck: no STUN server to test against")
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p, err := newProber("udp4")
	if err != nil {
		return nil, fmt.Errorf("netcheck: %w", err)
	}
	defer p.close()

	// The port-mapping probe talks only to the gateway: run it meanwhile.
	pm := make(chan PortMapReport, 1)
	if cfg.PortMapProbe != nil {
		go func() {
			res, err := cfg.PortMapProbe(ctx)
			r := PortMapReport{Probed: true, PortMapResult: res}
			if err != nil {
				r.Error = err.Error()
			}
			pm <- r
		}()
	} else {
		pm <- PortMapReport{}
	}

	// IPv6 runs meanwhile on its own socket: it cannot disturb the IPv4
	// NAT's mappings.
	v6 := make(chan ipv6Result, 1)
	go func() { v6 <- runIPv6(ctx, cfg) }()

	r := &Report{LocalPort: p.localPort()}
	t := &tester{cfg: cfg, p: p, report: r}
	obs := t.run(ctx)
	res := Classify(obs)
	r.UDP, r.Mapping, r.Filtering, r.NATType, r.Reason = res.UDP, res.Mapping, res.Filtering, res.NATType, res.Reason
	if why := t.ipv4Unavailable(); why != "" {
		r.IPv4Unavailable, r.NATType, r.Reason = why, NATUnknown, "IPv4 could not be tested: "+why
	}
	v6r := <-v6
	r.IPv6 = v6r.report
	r.Servers = append(r.Servers, v6r.servers...)
	switch r.Mapping {
	case EndpointIndependent:
		r.MappingVariesByDestination = new(false)
	case Unknown:
	default:
		r.MappingVariesByDestination = new(true)
	}
	if len(obs.Bindings) > 0 {
		r.PublicEndpoint = obs.Bindings[0].Mapped.String()
		r.PublicIP = obs.Bindings[0].Mapped.Addr().String()
	}
	r.Tests.ChangeIPPort, r.Tests.ChangeIPPortReason = obs.ChangeIPPort.String(), obs.ChangeIPPortReason
	r.Tests.ChangePort, r.Tests.ChangePortReason = obs.ChangePort.String(), obs.ChangePortReason
	select {
	case r.PortMapping = <-pm:
	case <-ctx.Done():
		r.PortMapping = PortMapReport{Probed: true, Error: "probe did not finish in time"}
	}
	return r, nil
}

// tester runs the tests of one Run in the order they must happen.
type tester struct {
	cfg    Config
	p      *prober
	report *Report

	mu sync.Mutex // guards report.Servers and report.Tests.Bindings
	// noRoute counts IPv4 exchanges that could not be sent for want of a
	// route, answered those that got an answer (under mu).
	noRoute, answered int
}

// target is a resolved server address; seq orders the report.
type target struct {
	addr string
	kind string
	ap   netip.AddrPort
	err  error
	seq  int
}

// run does the tests and returns what it observed; Observations.Bindings
// holds only answered exchanges, the primary's first.
//
// The mapping and the filtering tests must not share a socket:
//   - a filtering test asks for a reply from an address the socket never
//     sent to. On a router without an input firewall (Docker hosts, cloud
//     NAT instances, DIY routers) that unsolicited reply reaches the router
//     itself and leaves a conntrack entry for that address and the socket's
//     public port; the socket's own later Binding request to that address
//     clashes with it and leaves from another port, which reads as "the
//     mapping varies by destination" on a cone NAT;
//   - a Binding request to the alternate address would open the NAT for
//     the very reply a filtering test waits for.
//
// So the filtering tests run on a fresh socket that sends only to the
// primary, and whose mapping no verdict depends on; the main socket
// receives only answers to its own requests. They also run before the main
// socket sends to the alternate address: some restricted-cone NATs open
// their filter per host rather than per mapping (the lab's does), and
// would let the reply from the alternate IP in.
func (t *tester) run(ctx context.Context) Observations {
	var obs Observations
	stuns := make([]target, len(t.cfg.STUN))
	for i, s := range t.cfg.STUN {
		stuns[i] = resolve(ctx, s.Addr, KindSTUN)
		stuns[i].seq = 2 * i
	}
	// The test server: the first that resolves.
	first := -1
	for i, s := range stuns {
		if s.err == nil {
			first = i
			break
		}
	}
	noAlt := "the STUN server has no alternate address (start the coordinator with --stun-alt-listen)"
	if first < 0 {
		noAlt = "no STUN server address could be resolved"
	}
	obs.ChangeIPPortReason, obs.ChangePortReason = noAlt, noAlt
	var alt target
	var primaryAnswer *answer
	if first >= 0 {
		if a, ok := t.bind(ctx, stuns[first]); ok {
			primaryAnswer = &a
		}
		if s := t.cfg.STUN[first]; s.Alternate != "" {
			alt = resolve(ctx, s.Alternate, KindSTUNAlternate)
		} else if primaryAnswer != nil {
			if other, ok := primaryAnswer.otherAddress(); ok {
				alt = target{addr: other.String(), kind: KindSTUNAlternate, ap: other}
			}
		}
		alt.seq = 2*first + 1
		if alt.err != nil {
			t.addServer(ServerReport{Addr: alt.addr, Kind: alt.kind, Error: alt.err.Error(), seq: alt.seq})
			obs.ChangeIPPortReason = "the STUN alternate address did not resolve: " + alt.err.Error()
			obs.ChangePortReason = obs.ChangeIPPortReason
			alt = target{}
		}
		if primaryAnswer != nil && alt.ap.IsValid() {
			t.filteringTests(ctx, stuns[first].ap, alt.ap, &obs)
		} else if primaryAnswer == nil && alt.ap.IsValid() {
			obs.ChangeIPPortReason = "the STUN server did not answer"
			obs.ChangePortReason = obs.ChangeIPPortReason
		}
	}

	// Now everything else on the main socket, at once: the alternates for
	// the mapping test, the other servers and TURN for their latency.
	var rest []target
	if alt.ap.IsValid() {
		rest = append(rest, alt)
		pa := stuns[first].ap
		if alt.ap.Addr() != pa.Addr() && alt.ap.Port() != pa.Port() {
			// Other IP, same port: tells address- from
			// address-and-port-dependent mapping.
			cross := netip.AddrPortFrom(alt.ap.Addr(), pa.Port())
			rest = append(rest, target{addr: cross.String(), ap: cross})
		}
	}
	for i, s := range stuns {
		if i != first {
			rest = append(rest, s)
		}
	}
	for i, addr := range t.cfg.TURN {
		s := resolve(ctx, addr, KindTURN)
		s.seq = 2*len(stuns) + i
		rest = append(rest, s)
	}
	var wg sync.WaitGroup
	for _, s := range rest {
		wg.Go(func() { t.bind(ctx, s) })
	}
	wg.Wait()
	slices.SortStableFunc(t.report.Servers, func(a, b ServerReport) int { return cmp.Compare(a.seq, b.seq) })

	for _, b := range t.report.Tests.Bindings {
		if b.Mapped == "" {
			continue
		}
		obs.Bindings = append(obs.Bindings, Binding{Dest: netip.MustParseAddrPort(b.Dest), Mapped: netip.MustParseAddrPort(b.Mapped)})
	}
	if len(obs.Bindings) > 0 {
		obs.Local = isLocal(obs.Bindings[0].Mapped, t.p.localPort())
	}
	return obs
}

// bind does one plain Binding exchange with s and records it. Servers of
// kind "" are test addresses, not listed as servers.
func (t *tester) bind(ctx context.Context, s target) (answer, bool) {
	sr := ServerReport{Addr: s.addr, Kind: s.kind, seq: s.seq}
	defer func() {
		if s.kind != "" {
			t.addServer(sr)
		}
	}()
	if s.err != nil {
		sr.Error = s.err.Error()
		return answer{}, false
	}
	a, err := t.p.exchange(ctx, s.ap, 0, t.cfg.ProbeTimeout)
	t.countRoute(err)
	if err != nil {
		sr.Error = err.Error()
		if s.kind != KindTURN {
			t.addBinding(s, netip.AddrPort{})
		}
		return answer{}, false
	}
	ms := float64(a.rtt.Microseconds()) / 1000
	sr.LatencyMs = &ms
	mapped, err := a.mapped()
	if err != nil {
		sr.Error = err.Error()
		return answer{}, false
	}
	sr.Mapped = mapped.String()
	if s.kind != KindTURN {
		t.addBinding(s, mapped)
	}
	return a, true
}

func (t *tester) addServer(sr ServerReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.report.Servers = append(t.report.Servers, sr)
}

func (t *tester) addBinding(s target, mapped netip.AddrPort) {
	b := BindingReport{Dest: s.ap.String()}
	if mapped.IsValid() {
		b.Mapped = mapped.String()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// The primary's exchange is first; the rest finish in any order.
	t.report.Tests.Bindings = append(t.report.Tests.Bindings, b)
}

// filteringTests asks the primary to answer from its other IP and port
// (test II) and from its other port (test III), at once, from a socket of
// their own (see run).
func (t *tester) filteringTests(ctx context.Context, primary, alt netip.AddrPort, obs *Observations) {
	fp, err := newProber("udp4")
	if err != nil {
		obs.ChangeIPPortReason = fmt.Sprintf("no socket for the filtering tests: %v", err)
		obs.ChangePortReason = obs.ChangeIPPortReason
		return
	}
	defer fp.close()
	var wg sync.WaitGroup
	if alt.Addr() != primary.Addr() {
		flags := changeIP
		if alt.Port() != primary.Port() {
			flags |= changePort
		}
		wg.Go(func() {
			obs.ChangeIPPort, obs.ChangeIPPortReason = t.changeTest(ctx, fp, primary, flags, func(from netip.AddrPort) bool {
				return from.Addr() != primary.Addr()
			})
		})
	} else {
		obs.ChangeIPPortReason = "the STUN server's alternate address has the same IP, so a reply from another IP cannot be asked for"
	}
	if alt.Port() != primary.Port() {
		wg.Go(func() {
			obs.ChangePort, obs.ChangePortReason = t.changeTest(ctx, fp, primary, changePort, func(from netip.AddrPort) bool {
				return from.Addr() == primary.Addr() && from.Port() != primary.Port()
			})
		})
	} else {
		obs.ChangePortReason = "the STUN server's alternate address has the same port, so a reply from another port cannot be asked for"
	}
	wg.Wait()
}

// changeTest sends one CHANGE-REQUEST and judges the answer: it must come
// from the address asked for, or the server did not do what the test needs.
func (t *tester) changeTest(ctx context.Context, p *prober, primary netip.AddrPort, flags byte, fromOK func(netip.AddrPort) bool) (Outcome, string) {
	a, err := p.exchange(ctx, primary, flags, t.cfg.ProbeTimeout)
	if errors.Is(err, errNoAnswer) {
		return Silent, ""
	}
	if err != nil {
		return NotTested, err.Error()
	}
	if _, err := a.mapped(); err != nil {
		return NotTested, fmt.Sprintf("the STUN server refused CHANGE-REQUEST: %v", err)
	}
	if !fromOK(a.from) {
		return NotTested, fmt.Sprintf("the STUN server ignored CHANGE-REQUEST (answered from %s)", a.from)
	}
	return Answered, ""
}

// resolve looks up an IPv4 address for host:port.
func resolve(ctx context.Context, addr, kind string) target {
	t := target{addr: addr, kind: kind}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.err = fmt.Errorf("bad server address %q: want host:port", addr)
		return t
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil || port == 0 {
		t.err = fmt.Errorf("bad port in server address %q", addr)
		return t
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		if lerr != nil || len(ips) == 0 {
			t.err = fmt.Errorf("resolve %s: %v", host, lerr)
			return t
		}
		ip = ips[0]
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		t.err = fmt.Errorf("server %s is not IPv4: netcheck tests IPv4 only", addr)
		return t
	}
	t.ap = netip.AddrPortFrom(ip, uint16(port))
	return t
}

// isLocal reports whether mapped is one of this host's addresses with the
// socket's own port: no NAT in between.
func isLocal(mapped netip.AddrPort, port uint16) bool {
	if mapped.Port() != port {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == mapped.Addr() {
			return true
		}
	}
	return false
}

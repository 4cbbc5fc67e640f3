package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// IPv6 needs no NAT tests: networks with IPv6 give each host a global
// address behind a stateful firewall, so what matters is whether UDP over
// IPv6 gets out and which address and port peers should be told. Those
// come from one Binding exchange with an IPv6 STUN server (Config.STUN6,
// which the coordinator lists when it has a public IPv6 address).

// KindSTUN6 is an IPv6 STUN server in Report.Servers.
const KindSTUN6 = "stun-ipv6"

// IPv6Report is the IPv6 part of a Report.
type IPv6Report struct {
	// Tested is false when no IPv6 STUN server was given.
	Tested bool `json:"tested"`
	// UDP is true when an IPv6 STUN server answered.
	UDP            bool   `json:"udp"`
	PublicIP       string `json:"public_ip,omitempty"`
	PublicEndpoint string `json:"public_endpoint,omitempty"`
	LocalPort      uint16 `json:"local_port,omitempty"`
	// Translated is true when the public address is not one of this
	// host's (NAT66 or prefix translation); false for a global address.
	Translated bool `json:"translated"`
	// Reason says why IPv6 was not tested or did not work.
	Reason string `json:"reason,omitempty"`
}

type ipv6Result struct {
	report  IPv6Report
	servers []ServerReport
}

// splitFamilies moves IPv6 literals given as IPv4 STUN servers (e.g. a
// coordinator reached over IPv6 names its IPv6 address) to the IPv6 list,
// dropping duplicates.
func splitFamilies(v4, v6 []control.STUNServer) ([]control.STUNServer, []control.STUNServer) {
	var out4 []control.STUNServer
	out6 := append([]control.STUNServer(nil), v6...)
	for _, s := range v4 {
		ap, err := netip.ParseAddrPort(s.Addr)
		if err != nil || !ap.Addr().Is6() || ap.Addr().Is4In6() {
			out4 = append(out4, s)
			continue
		}
		dup := false
		for _, o := range out6 {
			dup = dup || o.Addr == s.Addr
		}
		if !dup {
			out6 = append(out6, control.STUNServer{Addr: s.Addr})
		}
	}
	return out4, out6
}

// runIPv6 asks each IPv6 STUN server in turn for this host's public IPv6
// endpoint (the first answer gives it) and its latency.
func runIPv6(ctx context.Context, cfg Config) ipv6Result {
	var res ipv6Result
	if len(cfg.STUN6) == 0 {
		res.report.Reason = "no IPv6 STUN server (the coordinator has no --public-ipv6)"
		return res
	}
	res.report.Tested = true
	p, err := newProber("udp6")
	if err != nil {
		res.report.Reason = fmt.Sprintf("no IPv6 socket: %v", err)
		return res
	}
	defer p.close()
	res.report.LocalPort = p.localPort()
	var errs []string
	for _, s := range cfg.STUN6 {
		sr := ServerReport{Addr: s.Addr, Kind: KindSTUN6}
		mapped, rtt, err := bind6(ctx, p, s.Addr, cfg)
		switch {
		case err != nil:
			sr.Error = err.Error()
			errs = append(errs, err.Error())
		default:
			ms := float64(rtt.Microseconds()) / 1000
			sr.LatencyMs, sr.Mapped = &ms, mapped.String()
			if !res.report.UDP {
				res.report.UDP = true
				res.report.PublicEndpoint, res.report.PublicIP = mapped.String(), mapped.Addr().String()
				res.report.Translated = !isLocal(mapped, p.localPort())
			}
		}
		res.servers = append(res.servers, sr)
	}
	if !res.report.UDP {
		res.report.Reason = "no IPv6 STUN server answered: " + strings.Join(errs, "; ")
	}
	return res
}

// bind6 resolves addr to an IPv6 address and does one Binding exchange.
func bind6(ctx context.Context, p *prober, addr string, cfg Config) (netip.AddrPort, time.Duration, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, 0, fmt.Errorf("bad server address %q: want [host]:port", addr)
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil || port == 0 {
		return netip.AddrPort{}, 0, fmt.Errorf("bad port in server address %q", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip6", host)
		if lerr != nil || len(ips) == 0 {
			return netip.AddrPort{}, 0, fmt.Errorf("resolve %s (AAAA): %v", host, lerr)
		}
		ip = ips[0]
	}
	if !ip.Is6() || ip.Is4In6() {
		return netip.AddrPort{}, 0, fmt.Errorf("server %s is not IPv6", addr)
	}
	a, err := p.exchange(ctx, netip.AddrPortFrom(ip, uint16(port)), 0, cfg.ProbeTimeout)
	if err != nil {
		if noRoute(err) {
			return netip.AddrPort{}, 0, fmt.Errorf("no IPv6 route to %s", addr)
		}
		return netip.AddrPort{}, 0, err
	}
	mapped, err := a.mapped()
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	return mapped, a.rtt, nil
}

// noRoute tells a send that failed for want of a route (a host without
// that family's default route) from one that went unanswered.
func noRoute(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

// countRoute records the outcome of one IPv4 exchange for ipv4Unavailable.
func (t *tester) countRoute(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err == nil:
		t.answered++
	case noRoute(err):
		t.noRoute++
	}
}

// ipv4Unavailable says why IPv4 could not be tested at all, "" when it
// could: no IPv4 server, or no IPv4 route to any of them.
func (t *tester) ipv4Unavailable() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case len(t.cfg.STUN) == 0:
		return "no IPv4 STUN server"
	case t.answered == 0 && t.noRoute > 0:
		return "no IPv4 route to the STUN servers (an IPv6-only host?)"
	}
	return ""
}

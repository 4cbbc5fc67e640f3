package agent

import (
	"cmp"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/hostdns"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/meshdns"
)

// DNS in the agent: the resolver answers on control.ResolverAddr, which is
// added to the TUN device as a second local address. The kernel delivers
// queries to it locally (UDP and TCP, no packet handling of ours on the
// data path), and a packet to it from anywhere but this host (a peer
// through the tunnel, a LAN neighbour routing to us) is refused by the
// resolver's source check. The host is pointed at it by hostdns unless
// --accept-dns=false.
//
// So DNS needs no packet hook on the TUN. A packet filter (the access
// policy) belongs in startDataPlane, wrapping the tun.Device handed to
// device.NewDevice: Read sees what this host sends to peers, Write what
// peers send to it. Queries to the resolver never pass there; a peer's
// packet addressed to it does (on Write), and a filter may drop it early.
type meshDNS struct {
	res  *meshdns.Resolver // nil when it could not start
	host *hostdns.Manager  // nil with --accept-dns=false

	mu     sync.Mutex
	domain string
}

// recoverHostDNS puts back a resolv.conf that a run killed before it could
// restore it left behind. It runs first thing, with or without
// --accept-dns, so the host's resolvers are right before anything reads
// them.
func recoverHostDNS(cfg Config) {
	file := hostdns.DefaultResolvConf
	res, err := hostdns.Recover(file, cfg.StateDir)
	switch {
	case err != nil:
		cfg.Logger.Error("restore resolv.conf left by an earlier run", "err", err)
	case res == hostdns.RestoredOriginal:
		cfg.Logger.Warn("restored the original resolv.conf left by an earlier run that did not stop cleanly", "file", file)
	case res == hostdns.LeftChanged:
		cfg.Logger.Warn("resolv.conf was changed since an earlier run wrote it; left as it is", "file", file)
	}
}

// startDNS runs the resolver on the TUN device and, with --accept-dns,
// points the host at it. A failure costs names, not the tunnel: it is
// logged and status shows it.
func (a *Agent) startDNS(self netip.Addr) {
	a.dns = &meshDNS{domain: control.DefaultDNSDomain}
	content, err := os.ReadFile(hostdns.DefaultResolvConf)
	if err != nil {
		a.log.Warn("read resolv.conf for upstream resolvers", "err", err)
	}
	ups := hostdns.Upstreams(content)
	if err := a.tun.AddAddr(control.ResolverAddr); err != nil {
		a.log.Error("DNS resolver not started", "err", err)
		return
	}
	res, err := meshdns.Listen(meshdns.Config{Listen: netip.AddrPortFrom(control.ResolverAddr, 53), Upstreams: ups, Logger: a.log.With("component", "dns")})
	if err != nil {
		a.log.Error("DNS resolver not started", "err", err)
		return
	}
	res.SetSelf(self)
	a.dns.res = res
	registerDNSMetrics(a.metrics.reg, res)
	if len(res.Upstreams()) == 0 {
		a.log.Warn("no upstream resolver in resolv.conf: only mesh names will resolve", "file", hostdns.DefaultResolvConf)
	}
	a.log.Info("DNS resolver up", "addr", control.ResolverAddr, "upstreams", res.Upstreams())
	if !a.cfg.AcceptDNS {
		return
	}
	a.dns.host = hostdns.NewManager(hostdns.Config{StateDir: a.cfg.StateDir,
		Resolver: control.ResolverAddr, IfIndex: a.tun.Index(), Log: a.log})
	a.applyHostDNS(a.dns.domain)
}

func (a *Agent) applyHostDNS(domain string) {
	if a.dns.host == nil {
		return
	}
	if err := a.dns.host.Apply(domain); err != nil {
		a.log.Error("point the host's DNS at the mesh resolver", "err", err)
		return
	}
	a.log.Info("host DNS set", "mode", a.dns.host.Mode(), "domain", domain)
}

// registerDNSMetrics counts the resolver's queries by outcome.
func registerDNSMetrics(reg *metrics.Registry, res *meshdns.Resolver) {
	reg.CounterFunc("meshvpn_agent_dns_queries_total",
		"Queries to the mesh resolver: answered from the mesh's names (mesh), sent to the host's original resolvers (forwarded), or dropped for a source other than this host (refused).",
		[]string{"result"}, func() []metrics.Sample {
			return []metrics.Sample{
				{Labels: []string{"mesh"}, Value: float64(res.Answered())},
				{Labels: []string{"forwarded"}, Value: float64(res.Forwarded())},
				{Labels: []string{"refused"}, Value: float64(res.Refused())},
			}
		})
}

// stopDNS restores the host's DNS and stops the resolver.
func (a *Agent) stopDNS() {
	if a.dns == nil {
		return
	}
	if a.dns.host != nil {
		if err := a.dns.host.Restore(); err != nil {
			a.log.Error("restore host DNS", "err", err)
		}
	}
	if a.dns.res != nil {
		a.dns.res.Close()
	}
}

// setDNSDomain takes the domain from a netmap.
func (a *Agent) setDNSDomain(cfg *control.DNSConfig) {
	if a.dns == nil || cfg == nil {
		return
	}
	d, err := control.NormalizeDNSDomain(cfg.Domain)
	if err != nil {
		a.log.Warn("coordinator sent an invalid DNS domain; keeping the current one", "err", err)
		return
	}
	a.dns.mu.Lock()
	changed := d != a.dns.domain
	a.dns.domain = d
	a.dns.mu.Unlock()
	if changed {
		a.applyHostDNS(d)
	}
}

// refreshNames gives the resolver the names of this node and its peers.
func (a *Agent) refreshNames() {
	if a.dns == nil || a.dns.res == nil {
		return
	}
	a.mu.Lock()
	self := a.self
	a.mu.Unlock()
	peers := a.peerList()
	recs := make([]meshdns.Record, 0, len(peers)+1)
	if ip, err := netip.ParseAddr(self.IP); err == nil {
		recs = append(recs, meshdns.Record{Name: self.Name, IP: ip, IP6: a.dnsIP6(self)})
	}
	// By node ID, so that of two peers claiming one name the older wins.
	slices.SortFunc(peers, func(x, y *peer) int { return cmp.Compare(x.id, y.id) })
	for _, p := range peers {
		p.mu.Lock()
		n := p.node
		p.mu.Unlock()
		if ip, err := netip.ParseAddr(n.IP); err == nil {
			recs = append(recs, meshdns.Record{Name: n.Name, IP: ip, IP6: a.dnsIP6(n)})
		}
	}
	a.dns.res.SetNames(a.dnsDomain(), recs)
}

func (a *Agent) dnsDomain() string {
	if a.dns == nil {
		return control.DefaultDNSDomain
	}
	a.dns.mu.Lock()
	defer a.dns.mu.Unlock()
	return a.dns.domain
}

// dnsStatus is the DNS part of status.
func (a *Agent) dnsStatus() *DNSStatus {
	st := &DNSStatus{Domain: a.dnsDomain(), Mode: hostdns.ModeOff}
	if a.dns == nil {
		return st
	}
	if a.dns.res != nil {
		st.Resolver = control.ResolverAddr.String()
	}
	if a.dns.host != nil {
		st.Mode = a.dns.host.Mode()
	}
	return st
}

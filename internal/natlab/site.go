package natlab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Site is a LAN behind one router (two for DoubleNAT), or (KindNone) a
// group of public hosts.
type Site struct {
	Name    string
	Kind    Kind
	Variant Variant
	// Router is the NAT router the hosts sit behind, in namespace NAME-nat
	// (nil for KindNone). Its IP is its WAN address: the address the
	// site's hosts appear from, except behind a DoubleNAT (see PublicIP).
	Router *Host
	// Carrier is a DoubleNAT site's carrier-grade NAT (namespace NAME-cgn),
	// with Router behind it at 172.16.N.2; nil for every other kind.
	Carrier *Host
	// ISP is the routing hop in front of the site (SiteSpec.ISPHop), nil
	// without one. Its IP is its address on the internet bridge.
	ISP *Host
	// LAN is the site's private prefix (10.N.0.0/24); invalid for KindNone.
	LAN netip.Prefix
	// LAN6 is an IPv6 site's global LAN prefix (2001:db8:N::/64), invalid
	// for other sites.
	LAN6 netip.Prefix
	// Host is the first host (named like the site); Hosts lists them all.
	Host  *Host
	Hosts []*Host

	lab      *Lab
	index    int
	ispHop   bool
	ipv6     bool // SiteSpec.IPv6 or IPv6Only
	ipv6Only bool
	wanDelay time.Duration
}

// PublicIP is the address the site's hosts appear from on the internet.
func (s *Site) PublicIP() netip.Addr {
	switch {
	case s.Carrier != nil:
		return s.Carrier.IP
	case s.Router != nil:
		return s.Router.IP
	}
	return s.Host.IP
}

// AddSite adds a site of the given kind with today's firewalled router
// (Variant InputDrop): AddSiteSpec(name, SiteSpec{Kind: kind}).
func (l *Lab) AddSite(name string, kind Kind) (*Site, error) {
	return l.AddSiteSpec(name, SiteSpec{Kind: kind})
}

// AddSiteSpec adds a site with one host named name. For a NAT kind it
// builds the router namespace NAME-nat (wan on the internet bridge, lan
// bridge with 10.N.0.1/24, forwarding on, the kind's nftables rules in the
// spec's variant) and the host behind it; for DoubleNAT the router's wan
// sits instead on the LAN (172.16.N.0/24) of a carrier NAT NAME-cgn, which
// holds the public address. For KindNone the host is public.
func (l *Lab) AddSiteSpec(name string, spec SiteSpec) (*Site, error) {
	if err := spec.Kind.check(); err != nil {
		return nil, err
	}
	if err := spec.Variant.check(); err != nil {
		return nil, err
	}
	if err := spec.check6(l); err != nil {
		return nil, fmt.Errorf("natlab: site %s: %w", name, err)
	}
	kind := spec.Kind
	l.mu.Lock()
	index := len(l.sites) + 1
	s := &Site{Name: name, Kind: kind, Variant: spec.Variant, lab: l, index: index, ispHop: spec.ISPHop,
		ipv6: spec.IPv6 || spec.IPv6Only, ipv6Only: spec.IPv6Only, wanDelay: spec.WANDelay}
	l.sites = append(l.sites, s)
	l.mu.Unlock()
	if index > 49 {
		return nil, fmt.Errorf("natlab: at most 49 sites per lab")
	}
	if spec.WANDelay < 0 || spec.WANDelay > time.Second {
		return nil, fmt.Errorf("natlab: site %s: WAN delay %v out of range (0-1s)", name, spec.WANDelay)
	}
	if spec.WANDelay > 0 && kind == None {
		return nil, fmt.Errorf("natlab: site %s: a WAN delay needs a NAT router", name)
	}
	if spec.ISPHop && kind == None {
		return nil, fmt.Errorf("natlab: site %s: an ISP hop needs a NAT router behind it", name)
	}
	if kind != None {
		if err := s.makeRouters(); err != nil {
			return nil, fmt.Errorf("natlab: site %s: %w", name, err)
		}
		if err := s.routerLAN6(); err != nil {
			return nil, fmt.Errorf("natlab: site %s: %w", name, err)
		}
	}
	if _, err := s.AddHost(name); err != nil {
		return nil, err
	}
	if kind != None {
		if err := s.applyRules(); err != nil {
			return nil, fmt.Errorf("natlab: site %s: %w", name, err)
		}
	}
	return s, nil
}

// makeRouters builds the router, and a DoubleNAT site's carrier NAT in
// front of it.
func (s *Site) makeRouters() error {
	public := s.publicAddr()
	if s.Kind != DoubleNAT {
		r, err := s.newRouter(s.Name+"-nat", public, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 1}), 24))
		if err != nil {
			return err
		}
		s.Router = r
		s.LAN = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 0}), 24)
		return s.uplink(r)
	}
	// 172.16.N.0/24 rather than the carriers' usual 100.64.0.0/10, which
	// is the mesh's overlay range.
	cgnGW := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(s.index), 1}), 24)
	c, err := s.newRouter(s.Name+"-cgn", public, cgnGW)
	if err != nil {
		return err
	}
	s.Carrier = c
	if err := s.uplink(c); err != nil {
		return err
	}
	home := netip.AddrFrom4([4]byte{172, 16, byte(s.index), 2})
	r, err := s.newRouter(s.Name+"-nat", home, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 1}), 24))
	if err != nil {
		return err
	}
	s.Router = r
	s.LAN = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 0}), 24)
	return runAll(
		[]string{"ip", "-n", r.NS, "link", "add", "wan", "type", "veth", "peer", "name", "r1", "netns", c.NS},
		[]string{"ip", "-n", c.NS, "link", "set", "r1", "master", "lan", "up"},
		[]string{"ip", "-n", r.NS, "addr", "add", netip.PrefixFrom(home, 24).String(), "dev", "wan"},
		[]string{"ip", "-n", r.NS, "link", "set", "wan", "up"},
		[]string{"ip", "-n", r.NS, "route", "add", "default", "via", cgnGW.Addr().String()},
	)
}

// newRouter makes a router namespace with address ip (its wan, added by
// the caller) and a lan bridge holding gw, forwarding on.
func (s *Site) newRouter(name string, ip netip.Addr, gw netip.Prefix) (*Host, error) {
	r, err := s.lab.newHost(name, s)
	if err != nil {
		return nil, err
	}
	r.IP = ip
	// The LAN side is a bridge so that a site can hold several hosts.
	if err := runAll(
		[]string{"ip", "-n", r.NS, "link", "add", "lan", "type", "bridge"},
		[]string{"ip", "-n", r.NS, "addr", "add", gw.String(), "dev", "lan"},
		[]string{"ip", "-n", r.NS, "link", "set", "lan", "up"},
	); err != nil {
		return nil, err
	}
	return r, setSysctl(r.NS, "net/ipv4/ip_forward", "1")
}

// AddHost adds another host to the site: 10.N.0.(10+i) behind the router,
// or another public address for KindNone.
func (s *Site) AddHost(name string) (*Host, error) {
	h, err := s.lab.newHost(name, s)
	if err != nil {
		return nil, err
	}
	if s.Kind == None {
		s.lab.mu.Lock()
		s.lab.publicAuto++
		n := s.lab.publicAuto
		s.lab.mu.Unlock()
		if n > 49 {
			return nil, fmt.Errorf("natlab: out of public addresses")
		}
		h.IP = netip.AddrFrom4([4]byte{203, 0, 113, byte(150 + n)})
		if h.IP6, err = s.lab.connectInternet(h.NS, "eth0", h.IP); err != nil {
			return nil, fmt.Errorf("natlab: host %s: %w", name, err)
		}
	} else {
		i := len(s.Hosts) + 1
		if i > 100 {
			return nil, fmt.Errorf("natlab: site %s is full", s.Name)
		}
		h.IP = netip.AddrFrom4([4]byte{10, byte(s.index), 0, byte(10 + i)})
		port := fmt.Sprintf("h%d", i)
		gw := netip.AddrFrom4([4]byte{10, byte(s.index), 0, 1})
		cmds := [][]string{
			{"ip", "-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", s.Router.NS},
			{"ip", "-n", s.Router.NS, "link", "set", port, "master", "lan", "up"},
			{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.IP, 24).String(), "dev", "eth0"},
			{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		}
		// An IPv6-only host keeps its LAN address (lab tooling may use
		// it) but reaches nothing beyond it over IPv4.
		if !s.ipv6Only {
			cmds = append(cmds, []string{"ip", "-n", h.NS, "route", "add", "default", "via", gw.String()})
		}
		if s.ipv6 {
			if err := enableIPv6(h.NS, false); err != nil {
				return nil, err
			}
			h.IP6 = nth(s.LAN6, 0x10+i)
			cmds = append(cmds, addAddr6(h.NS, "eth0", h.IP6, 64),
				[]string{"ip", "-n", h.NS, "-6", "route", "add", "default", "via", nth(s.LAN6, 1).String()})
		}
		if err := runAll(cmds...); err != nil {
			return nil, fmt.Errorf("natlab: host %s: %w", name, err)
		}
	}
	s.lab.mu.Lock()
	s.Hosts = append(s.Hosts, h)
	if s.Host == nil {
		s.Host = h
	}
	s.lab.mu.Unlock()
	return h, nil
}

// applyRules loads the kind's nftables rulesets into the site's routers.
// The files are kept in the lab dir, so `nft -f` can replay them by hand.
func (s *Site) applyRules() error {
	kind := s.Kind
	if s.Carrier != nil {
		carrierLAN := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(s.index), 0}), 24)
		if err := s.loadRules(s.Carrier, PortRestricted, carrierLAN, s.Router.IP); err != nil {
			return err
		}
		kind = PortRestricted
	}
	if err := s.loadRules(s.Router, kind, s.LAN, s.Host.IP); err != nil {
		return err
	}
	if !s.ipv6 {
		return nil
	}
	path := filepath.Join(s.lab.Dir, s.Router.Name+".nft6")
	if err := os.WriteFile(path, []byte(firewall6(s.Kind, s.Variant)), 0o644); err != nil {
		return err
	}
	return run("ip", "netns", "exec", s.Router.NS, "nft", "-f", path)
}

// routerLAN6 gives an IPv6 site's router its LAN address (forwarding is
// on since its uplink).
func (s *Site) routerLAN6() error {
	if !s.ipv6 {
		return nil
	}
	s.LAN6 = lan6(s.index)
	return runAll(addAddr6(s.Router.NS, "lan", nth(s.LAN6, 1), 64))
}

func (s *Site) loadRules(r *Host, kind Kind, lan netip.Prefix, host netip.Addr) error {
	rs, err := kind.rules(lan, host, s.Variant)
	if err != nil {
		return err
	}
	path := filepath.Join(s.lab.Dir, r.Name+".nft")
	if err := os.WriteFile(path, []byte(rs.render()), 0o644); err != nil {
		return err
	}
	return run("ip", "netns", "exec", r.NS, "nft", "-f", path)
}

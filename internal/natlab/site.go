package natlab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Site is a LAN behind one router, or (KindNone) a group of public hosts.
type Site struct {
	Name string
	Kind Kind
	// Router is the NAT router's namespace (nil for KindNone). Its IP is the
	// WAN address all the site's hosts appear from.
	Router *Host
	// LAN is the site's private prefix (10.N.0.0/24); invalid for KindNone.
	LAN netip.Prefix
	// Host is the first host (named like the site); Hosts lists them all.
	Host  *Host
	Hosts []*Host

	lab   *Lab
	index int
}

// AddSite adds a site with one host named name. For a NAT kind it builds the
// router namespace NAME-nat (wan on the internet bridge, lan bridge with
// 10.N.0.1/24, forwarding on, the kind's nftables rules) and the host
// behind it; for KindNone the host is public.
func (l *Lab) AddSite(name string, kind Kind) (*Site, error) {
	if _, err := kind.rules(nil); err != nil {
		return nil, err
	}
	l.mu.Lock()
	index := len(l.sites) + 1
	s := &Site{Name: name, Kind: kind, lab: l, index: index}
	l.sites = append(l.sites, s)
	l.mu.Unlock()
	if index > 49 {
		return nil, fmt.Errorf("natlab: at most 49 sites per lab")
	}
	if kind != None {
		if err := s.makeRouter(); err != nil {
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

func (s *Site) makeRouter() error {
	r, err := s.lab.newHost(s.Name+"-nat", s)
	if err != nil {
		return err
	}
	s.Router = r
	r.IP = netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + s.index)})
	s.LAN = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 0}), 24)
	if err := s.lab.connectInternet(r.NS, "wan", r.IP); err != nil {
		return err
	}
	// The LAN side is a bridge so that a site can hold several hosts.
	gw := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.index), 0, 1}), 24)
	if err := runAll(
		[]string{"ip", "-n", r.NS, "link", "add", "lan", "type", "bridge"},
		[]string{"ip", "-n", r.NS, "addr", "add", gw.String(), "dev", "lan"},
		[]string{"ip", "-n", r.NS, "link", "set", "lan", "up"},
	); err != nil {
		return err
	}
	return setSysctl(r.NS, "net/ipv4/ip_forward", "1")
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
		if err := s.lab.connectInternet(h.NS, "eth0", h.IP); err != nil {
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
		if err := runAll(
			[]string{"ip", "-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", s.Router.NS},
			[]string{"ip", "-n", s.Router.NS, "link", "set", port, "master", "lan", "up"},
			[]string{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.IP, 24).String(), "dev", "eth0"},
			[]string{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.NS, "route", "add", "default", "via", gw.String()},
		); err != nil {
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

// applyRules loads the kind's nftables ruleset into the router. The file is
// kept in the lab dir, so `nft -f` can replay it by hand.
func (s *Site) applyRules() error {
	r, err := s.Kind.rules(s)
	if err != nil {
		return err
	}
	path := filepath.Join(s.lab.Dir, s.Router.Name+".nft")
	if err := os.WriteFile(path, []byte(r.render()), 0o644); err != nil {
		return err
	}
	return run("ip", "netns", "exec", s.Router.NS, "nft", "-f", path)
}

package natlab

import (
	"fmt"
	"net/netip"
)

// An ISP hop is a plain router between a site's outermost NAT and the
// internet bridge. On a flat bridge every router is one hop from every
// other, so no TTL can open a site's NAT without the packet also reaching
// the peer's router; behind a hop, a packet sent with TTL 2 (3 behind a
// DoubleNAT) passes the site's NAT and dies at the hop (LAB-NOTES.md, "A
// routing hop between NATs").
//
// Addresses for site N: the hop holds the site's usual public slot
// 203.0.113.(100+N) on the bridge and 198.18.N.1/24 toward the site; the
// site's router wan is 198.18.N.2/24 with a default route to the hop.
// Every namespace on the bridge routes 198.18.N.0/24 via the hop.

// hopNet is the prefix between site index's hop and its router.
func hopNet(index int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(index), 0}), 24)
}

// publicAddr is the wan address of the site's outermost router.
func (s *Site) publicAddr() netip.Addr {
	if s.ispHop {
		return netip.AddrFrom4([4]byte{198, 18, byte(s.index), 2})
	}
	return netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + s.index)})
}

// uplink connects the site's outermost router r (whose IP is publicAddr)
// to the internet: straight onto the bridge, or through a new ISP hop.
// With a WANDelay, a delay box sits between that and the bridge.
func (s *Site) uplink(r *Host) error {
	box, err := s.delayBox()
	if err != nil {
		return err
	}
	var behind6 netip.Prefix
	if s.ipv6 {
		behind6 = site6(s.index)
	}
	if !s.ispHop {
		if r.IP6, err = s.lab.connectRouted(r.NS, "wan", r.IP, netip.Prefix{}, behind6, box); err != nil {
			return err
		}
		return s.startDelayBox(box)
	}
	hop, err := s.lab.newHost(s.Name+"-isp", s)
	if err != nil {
		return err
	}
	hop.IP = netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + s.index)})
	s.ISP = hop
	inner := hopNet(s.index)
	gw := netip.AddrFrom4([4]byte{198, 18, byte(s.index), 1})
	if err := setSysctl(hop.NS, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := runAll(
		[]string{"ip", "-n", r.NS, "link", "add", "wan", "type", "veth", "peer", "name", "cust", "netns", hop.NS},
		[]string{"ip", "-n", hop.NS, "addr", "add", netip.PrefixFrom(gw, 24).String(), "dev", "cust"},
		[]string{"ip", "-n", hop.NS, "link", "set", "cust", "up"},
		[]string{"ip", "-n", r.NS, "addr", "add", netip.PrefixFrom(r.IP, 24).String(), "dev", "wan"},
		[]string{"ip", "-n", r.NS, "link", "set", "wan", "up"},
		[]string{"ip", "-n", r.NS, "route", "add", "default", "via", gw.String()},
	); err != nil {
		return fmt.Errorf("ISP hop: %w", err)
	}
	if hop.IP6, err = s.lab.connectRouted(hop.NS, "wan", hop.IP, inner, behind6, box); err != nil {
		return err
	}
	if err := s.startDelayBox(box); err != nil {
		return err
	}
	if !s.ipv6 {
		return nil
	}
	// IPv6 is routed, not NATed: the hop forwards the site's /48 to the
	// router over their link.
	link := hop6(s.index)
	r.IP6 = nth(link, 2)
	if err := enableIPv6(r.NS, true); err != nil {
		return err
	}
	if err := runAll(
		addAddr6(hop.NS, "cust", nth(link, 1), 64),
		addAddr6(r.NS, "wan", r.IP6, 64),
		[]string{"ip", "-n", r.NS, "-6", "route", "add", "default", "via", nth(link, 1).String()},
		[]string{"ip", "-n", hop.NS, "-6", "route", "add", lan6(s.index).String(), "via", r.IP6.String()},
	); err != nil {
		return fmt.Errorf("ISP hop IPv6: %w", err)
	}
	return nil
}

// hopRoute is a prefix behind an ISP hop, reached via the hop's bridge
// address; or (ipv6.go) a dual-stack site's /48 via its bridge-facing box.
type hopRoute struct {
	prefix netip.Prefix
	via    netip.Addr
}

// joinRoutes is ns joining the bridge where the namespaces bridged route
// the prefixes routes: the commands that give ns those routes and, when
// behind is valid, route behind via ns's address via in every other
// namespace; and the grown lists.
func joinRoutes(ns string, routes []hopRoute, bridged []string, behind netip.Prefix, via netip.Addr) ([][]string, []hopRoute, []string) {
	var cmds [][]string
	for _, r := range routes {
		cmds = append(cmds, r.cmd(ns))
	}
	if behind.IsValid() {
		r := hopRoute{prefix: behind, via: via}
		for _, other := range bridged {
			cmds = append(cmds, r.cmd(other))
		}
		routes = append(routes, r)
	}
	return cmds, routes, append(bridged, ns)
}

// routeCmd is the command that adds r in namespace ns.
func (r hopRoute) cmd(ns string) []string {
	return []string{"ip", "-n", ns, "route", "add", r.prefix.String(), "via", r.via.String()}
}

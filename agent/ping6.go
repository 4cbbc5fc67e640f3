package agent

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// icmpFamily is what differs between ping over IPv4 (ICMP) and over IPv6
// (ICMPv6).
type icmpFamily struct {
	// raw and dgram are the networks of a raw socket (root) and of an
	// unprivileged ping socket (net.ipv4.ping_group_range, which governs
	// both families).
	raw, dgram, any string
	proto           int // for icmp.ParseMessage
	echo, reply     icmp.Type
}

var (
	icmp4 = icmpFamily{raw: "ip4:icmp", dgram: "udp4", any: "0.0.0.0", proto: 1, echo: ipv4.ICMPTypeEcho, reply: ipv4.ICMPTypeEchoReply}
	icmp6 = icmpFamily{raw: "ip6:ipv6-icmp", dgram: "udp6", any: "::", proto: 58, echo: ipv6.ICMPTypeEchoRequest, reply: ipv6.ICMPTypeEchoReply}
)

func icmpFamilyFor(v6 bool) icmpFamily {
	if v6 {
		return icmp6
	}
	return icmp4
}

// listen opens a raw ICMP socket (root) or, failing that, an unprivileged
// ping socket, and says which network it is.
func (f icmpFamily) listen() (*icmp.PacketConn, string, error) {
	c, err := icmp.ListenPacket(f.raw, f.any)
	if err == nil {
		return c, f.raw, nil
	}
	c, err2 := icmp.ListenPacket(f.dgram, f.any)
	if err2 == nil {
		return c, f.dgram, nil
	}
	return nil, "", fmt.Errorf("open ICMP socket: %w (needs root, CAP_NET_RAW or net.ipv4.ping_group_range)", errors.Join(err, err2))
}

// pingAddrs picks the peer's address to ping and this node's own of the
// same family.
func pingAddrs(st *Status, p *PeerStatus, v6 bool) (dst, from netip.Addr, err error) {
	if !v6 {
		dst, err = netip.ParseAddr(p.IP)
		if err != nil {
			return dst, from, fmt.Errorf("peer %s has no usable address %q", p.Name, p.IP)
		}
		from, _ = netip.ParseAddr(st.Self.IP)
		return dst, from, nil
	}
	if st.Self.IP6 == "" {
		return dst, from, errors.New("this node has no IPv6 overlay address (the coordinator gave none, or IPv6 is off on this host)")
	}
	dst, err = netip.ParseAddr(p.IP6)
	if err != nil {
		return dst, from, fmt.Errorf("peer %s has no IPv6 overlay address", p.Name)
	}
	from, _ = netip.ParseAddr(st.Self.IP6)
	return dst, from, nil
}

// sameAddr tells whether s spells a.
func sameAddr(s string, a netip.Addr) bool {
	b, err := netip.ParseAddr(s)
	return err == nil && b == a
}

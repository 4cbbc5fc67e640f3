package filter

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/meshvpn/meshvpn/policy"
)

var (
	laptop6 = netip.MustParseAddr("fd12:3456:789a::6440:1")
	server6 = netip.MustParseAddr("fd12:3456:789a::6440:2")
	other6  = netip.MustParseAddr("fd12:3456:789a::6440:3")
)

// Next-header values of IPv6 extension headers the tests build.
const (
	nhHopByHop = 0
	nhFragment = 44
	nhDestOpts = 60
)

// ipv6 builds an IPv6 packet: ext is the extension headers (each already
// carrying its own next-header byte), nh the first next-header value.
func ipv6(nh uint8, src, dst netip.Addr, ext, l4 []byte) []byte {
	b := make([]byte, 40, 40+len(ext)+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(ext)+len(l4)))
	b[6] = nh
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	b = append(b, ext...)
	return append(b, l4...)
}

func tcpHdr(sport, dport uint16, flags uint8) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	l4[12] = 5 << 4
	l4[13] = flags
	return l4
}

func tcp6(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return ipv6(protoTCP, src, dst, nil, tcpHdr(sport, dport, flags))
}

func echo6(src, dst netip.Addr, typ uint8, id uint16) []byte {
	l4 := make([]byte, 8)
	l4[0] = typ
	binary.BigEndian.PutUint16(l4[4:6], id)
	return ipv6(protoICMPv6, src, dst, nil, l4)
}

// optsHdr is an 8-byte hop-by-hop or destination options header (PadN).
func optsHdr(next uint8) []byte {
	return []byte{next, 0, 1, 4, 0, 0, 0, 0}
}

// fragHdr is a fragment header at offset (in 8-byte units).
func fragHdr(next uint8, offset uint16, more bool) []byte {
	h := make([]byte, 8)
	h[0] = next
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:4], v)
	return h
}

// serverFilter6 is serverFilter's policy with both peers dual-stack.
func serverFilter6() *Filter {
	f := New()
	f.Set(&policy.Filter{
		In:  []policy.Rule{{Peers: []string{"laptop"}, Proto: protoTCP, Ports: []policy.PortRange{{First: 22, Last: 22}}}},
		Out: []policy.Rule{},
	}, []Peer{{IP: laptopIP, IP6: laptop6, Name: "laptop"}, {IP: otherIP, IP6: other6, Name: "other"}})
	return f
}

// TestIPv6SamePolicy: the policy is about nodes, not address families: a
// node denied over IPv4 is denied over IPv6, an allowed one is allowed,
// and replies are tracked as over IPv4.
func TestIPv6SamePolicy(t *testing.T) {
	f := serverFilter6()
	if in(f, tcp6(other6, server6, 40000, 22, tcpSYN)) {
		t.Fatal("a denied peer reached ssh over IPv6")
	}
	if in(f, tcp6(laptop6, server6, 40001, 80, tcpSYN)) {
		t.Fatal("the laptop reached port 80 over IPv6")
	}
	if out(f, tcp6(server6, laptop6, 40002, 22, tcpSYN)) {
		t.Fatal("the server opened a connection to the laptop over IPv6")
	}
	if !in(f, tcp6(laptop6, server6, 40003, 22, tcpSYN)) {
		t.Fatal("allowed ssh over IPv6 dropped")
	}
	if !out(f, tcp6(server6, laptop6, 22, 40003, tcpSYN|0x10)) {
		t.Fatal("reply to allowed ssh over IPv6 dropped")
	}
	if in(f, tcp6(netip.MustParseAddr("fd12:3456:789a::6440:9"), server6, 1, 22, tcpSYN)) {
		t.Fatal("an unknown IPv6 address passed")
	}
	// Drops over either family count for the one peer.
	if _, _, din, dout := f.PeerInfo(laptopIP); din != 1 || dout != 1 {
		t.Fatalf("laptop drops: in %d out %d, want 1 and 1", din, dout)
	}
}

// TestIPv6ExtensionHeaders: a transport header behind extension headers
// is judged by its own protocol and ports. A filter that took the fixed
// header's next-header as the protocol would see "protocol 60" behind
// which ssh passes a rule for any protocol on port 80.
func TestIPv6ExtensionHeaders(t *testing.T) {
	f := New()
	f.Set(&policy.Filter{
		In:  []policy.Rule{{Peers: []string{"laptop"}, Ports: []policy.PortRange{{First: 80, Last: 80}}}},
		Out: []policy.Rule{},
	}, []Peer{{IP: laptopIP, IP6: laptop6, Name: "laptop"}})
	hidden := ipv6(nhDestOpts, laptop6, server6, optsHdr(protoTCP), tcpHdr(40000, 22, tcpSYN))
	if in(f, hidden) {
		t.Fatal("ssh behind a destination options header passed a port-80 rule")
	}
	chain := append(optsHdr(nhDestOpts), optsHdr(protoTCP)...)
	if in(f, ipv6(nhHopByHop, laptop6, server6, chain, tcpHdr(40001, 22, tcpSYN))) {
		t.Fatal("ssh behind hop-by-hop and destination options passed a port-80 rule")
	}
	if !in(f, ipv6(nhDestOpts, laptop6, server6, optsHdr(protoTCP), tcpHdr(40002, 80, tcpSYN))) {
		t.Fatal("port 80 behind a destination options header dropped")
	}
	// The first fragment carries the ports and is judged by them.
	if in(f, ipv6(nhFragment, laptop6, server6, fragHdr(protoTCP, 0, true), tcpHdr(40003, 22, tcpSYN))) {
		t.Fatal("first fragment of ssh passed a port-80 rule")
	}
	// A chain longer than any real packet's is dropped.
	var long []byte
	for range 20 {
		long = append(long, optsHdr(nhDestOpts)...)
	}
	long[len(long)-8] = protoTCP
	if in(f, ipv6(nhDestOpts, laptop6, server6, long, tcpHdr(40004, 80, tcpSYN))) {
		t.Fatal("a 20-header chain passed")
	}
}

// TestIPv6ICMP: ICMPv6 echo is "icmp" to the policy; an ICMPv6 error about
// a tracked connection passes with it.
func TestIPv6ICMP(t *testing.T) {
	f := New()
	f.Set(&policy.Filter{
		In: []policy.Rule{},
		Out: []policy.Rule{
			{Peers: []string{"server"}, Proto: protoTCP, Ports: []policy.PortRange{{First: 22, Last: 22}}},
			{Peers: []string{"server"}, Proto: protoICMP},
		},
	}, []Peer{{IP: serverIP, IP6: server6, Name: "server"}})
	if !out(f, echo6(laptop6, server6, icmp6Echo, 7)) || !in(f, echo6(server6, laptop6, icmp6EchoReply, 7)) {
		t.Fatal("ping -6 or its reply dropped")
	}
	if in(f, echo6(server6, laptop6, icmp6Echo, 8)) {
		t.Fatal("ping -6 from the server passed")
	}
	syn := tcp6(laptop6, server6, 40000, 22, tcpSYN)
	if !out(f, syn) {
		t.Fatal("ssh over IPv6 dropped")
	}
	tooBig := append([]byte{2, 0, 0, 0, 0, 0, 5, 0}, syn[:48]...)
	if !in(f, ipv6(protoICMPv6, server6, laptop6, nil, tooBig)) {
		t.Fatal("packet-too-big about a tracked connection dropped")
	}
	other := append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, tcp6(laptop6, server6, 1, 9, tcpSYN)[:48]...)
	if in(f, ipv6(protoICMPv6, server6, laptop6, nil, other)) {
		t.Fatal("ICMPv6 error about an unknown connection passed")
	}
	if open, ping, _, _ := f.PeerInfo(server6); open != "tcp 22; icmp" || ping {
		t.Fatalf("PeerInfo by IPv6 address: %q ping blocked %v", open, ping)
	}
}

func TestParse6RejectsGarbage(t *testing.T) {
	good := tcp6(laptop6, server6, 1, 22, tcpSYN)
	for _, b := range [][]byte{{0x60}, good[:39], good[:45], ipv6(nhDestOpts, laptop6, server6, []byte{protoTCP, 9}, nil)} {
		if _, err := parse(b); err == nil {
			t.Errorf("parsed %x", b)
		}
	}
	// Fragments after the first carry no ports.
	p, err := parse(ipv6(nhFragment, laptop6, server6, fragHdr(protoUDP, 10, false), make([]byte, 8)))
	if err != nil || !p.fragment || p.proto != protoUDP || p.dstPort != 0 {
		t.Fatalf("fragment: %+v %v", p, err)
	}
}

// A rule for protocol 58 (ICMPv6) lets ICMPv6 through, not IPv4's ICMP.
func TestIPv6ICMPRuleByNumber(t *testing.T) {
	f := New()
	f.Set(&policy.Filter{In: []policy.Rule{{Peers: []string{"*"}, Proto: protoICMPv6}}, Out: []policy.Rule{}},
		[]Peer{{IP: laptopIP, IP6: laptop6, Name: "laptop"}})
	if !in(f, echo6(laptop6, server6, icmp6Echo, 1)) {
		t.Fatal("ICMPv6 echo dropped by a protocol-58 rule")
	}
	if in(f, echo(laptopIP, serverIP, icmpEcho, 2)) {
		t.Fatal("ICMP echo passed a protocol-58 rule")
	}
}

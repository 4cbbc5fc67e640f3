package filter

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/policy"
)

var (
	laptopIP = netip.MustParseAddr("100.64.0.1")
	serverIP = netip.MustParseAddr("100.64.0.2")
	otherIP  = netip.MustParseAddr("100.64.0.3")
)

// ipv4 builds an IPv4 packet with a transport header l4.
func ipv4(proto uint8, src, dst netip.Addr, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	copy(b[20:], l4)
	return b
}

func tcp(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	l4[12] = 5 << 4
	l4[13] = flags
	return ipv4(protoTCP, src, dst, l4)
}

func udp(src, dst netip.Addr, sport, dport uint16) []byte {
	l4 := make([]byte, 8)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	return ipv4(protoUDP, src, dst, l4)
}

func echo(src, dst netip.Addr, typ uint8, id uint16) []byte {
	l4 := make([]byte, 8)
	l4[0] = typ
	binary.BigEndian.PutUint16(l4[4:6], id)
	return ipv4(protoICMP, src, dst, l4)
}

func icmpErr(src, dst netip.Addr, quoted []byte) []byte {
	l4 := append(make([]byte, 8), quoted[:28]...)
	l4[0] = icmpUnreachable
	return ipv4(protoICMP, src, dst, l4)
}

func out(f *Filter, pkt []byte) bool {
	sizes := []int{len(pkt)}
	f.Outbound([][]byte{pkt}, sizes, 0)
	return sizes[0] != 0
}

func in(f *Filter, pkt []byte) bool {
	return len(f.Inbound([][]byte{pkt}, 0)) == 1
}

// serverFilter: the laptop may reach the server on tcp 22; the server may
// open nothing.
func serverFilter() *Filter {
	f := New()
	f.Set(&policy.Filter{
		In:  []policy.Rule{{Peers: []string{"laptop"}, Proto: protoTCP, Ports: []policy.PortRange{{First: 22, Last: 22}}}},
		Out: []policy.Rule{},
	}, []Peer{{IP: laptopIP, Name: "laptop"}, {IP: otherIP, Name: "other"}})
	return f
}

func TestNoRulesPassesEverything(t *testing.T) {
	f := New()
	if !out(f, tcp(serverIP, laptopIP, 1000, 22, tcpSYN)) || !in(f, []byte{0x60}) {
		t.Fatal("a filter without rules dropped a packet")
	}
}

func TestStatefulServerSide(t *testing.T) {
	f := serverFilter()
	if !in(f, tcp(laptopIP, serverIP, 40000, 22, tcpSYN)) {
		t.Fatal("allowed ssh dropped")
	}
	if !out(f, tcp(serverIP, laptopIP, 22, 40000, tcpSYN|0x10)) {
		t.Fatal("reply to allowed ssh dropped")
	}
	if !in(f, tcp(laptopIP, serverIP, 40000, 22, 0x10)) {
		t.Fatal("established ssh dropped")
	}
	if in(f, tcp(laptopIP, serverIP, 40001, 80, tcpSYN)) {
		t.Fatal("port 80 passed")
	}
	if out(f, tcp(serverIP, laptopIP, 40002, 22, tcpSYN)) {
		t.Fatal("server opened a connection to the laptop")
	}
	if in(f, tcp(otherIP, serverIP, 40000, 22, tcpSYN)) {
		t.Fatal("other reached ssh")
	}
	if in(f, udp(laptopIP, serverIP, 40000, 22)) {
		t.Fatal("udp 22 passed a tcp rule")
	}
	if in(f, tcp(netip.MustParseAddr("100.64.9.9"), serverIP, 1, 22, tcpSYN)) {
		t.Fatal("unknown peer passed")
	}
	open, ping, din, dout := f.PeerInfo(laptopIP)
	if open != "blocked by policy" || !ping || din != 2 || dout != 1 {
		t.Fatalf("PeerInfo: %q %v in %d out %d", open, ping, din, dout)
	}
}

func TestStatefulLaptopSide(t *testing.T) {
	f := New()
	f.Set(&policy.Filter{
		In: []policy.Rule{},
		Out: []policy.Rule{
			{Peers: []string{"tag:server"}, Proto: protoTCP, Ports: []policy.PortRange{{First: 22, Last: 22}}},
			{Peers: []string{"100.64.0.0/24"}, Proto: protoICMP},
		},
	}, []Peer{{IP: serverIP, Name: "server", Tags: []string{"server"}}})
	syn := tcp(laptopIP, serverIP, 40000, 22, tcpSYN)
	if !out(f, syn) || !in(f, tcp(serverIP, laptopIP, 22, 40000, tcpSYN|0x10)) {
		t.Fatal("ssh to the server or its answer dropped")
	}
	if in(f, tcp(serverIP, laptopIP, 22, 40001, tcpSYN)) {
		t.Fatal("a new connection from the server passed")
	}
	if out(f, tcp(laptopIP, serverIP, 40003, 80, tcpSYN)) {
		t.Fatal("port 80 left the laptop")
	}
	if !out(f, echo(laptopIP, serverIP, icmpEcho, 7)) || !in(f, echo(serverIP, laptopIP, icmpEchoReply, 7)) {
		t.Fatal("ping or its reply dropped")
	}
	if in(f, echo(serverIP, laptopIP, icmpEcho, 8)) {
		t.Fatal("ping from the server passed")
	}
	// An ICMP error about the tracked ssh connection passes; one about an
	// unknown connection does not.
	if !in(f, icmpErr(serverIP, laptopIP, syn)) {
		t.Fatal("ICMP error about a tracked connection dropped")
	}
	if in(f, icmpErr(serverIP, laptopIP, tcp(laptopIP, serverIP, 1, 9, tcpSYN))) {
		t.Fatal("ICMP error about an unknown connection passed")
	}
	if open, ping, _, _ := f.PeerInfo(serverIP); open != "tcp 22; icmp" || ping {
		t.Fatalf("PeerInfo: %q ping blocked %v", open, ping)
	}
	f.Set(&policy.Filter{AllowAll: true}, nil)
	if !in(f, tcp(serverIP, laptopIP, 22, 40001, tcpSYN)) {
		t.Fatal("lifting the policy did not open the filter")
	}
}

func TestConntrackExpiresAndIsBounded(t *testing.T) {
	f := serverFilter()
	f.ct.max = 100
	for i := range 1000 {
		in(f, tcp(laptopIP, serverIP, uint16(10000+i), 22, tcpSYN))
	}
	if n := f.Conns(); n > 100 {
		t.Fatalf("%d connections tracked, max 100", n)
	}
	// A reply after the idle timeout is judged by the rules again.
	in(f, udp(laptopIP, serverIP, 5000, 22)) // not allowed: no entry
	in(f, tcp(laptopIP, serverIP, 5001, 22, tcpSYN))
	k := connKey{protoTCP, laptopIP, 22, 5001}
	f.ct.conns[k] = time.Now().Add(-time.Second).UnixNano()
	if out(f, tcp(serverIP, laptopIP, 22, 5001, 0x10)) {
		t.Fatal("reply of an expired connection passed")
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0x45}, make([]byte, 19), append([]byte{0x4f}, make([]byte, 30)...), append([]byte{0x44}, make([]byte, 30)...)} {
		if _, err := parse(b); err == nil {
			t.Errorf("parsed %x", b)
		}
	}
	// Fragments after the first carry no ports.
	p := udp(laptopIP, serverIP, 1, 2)
	p[6], p[7] = 0, 10
	if q, err := parse(p); err != nil || !q.fragment || q.dstPort != 0 {
		t.Fatalf("fragment: %+v %v", q, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(tcp(laptopIP, serverIP, 1, 22, tcpSYN))
	f.Add(udp(laptopIP, serverIP, 1, 53))
	f.Add(echo(laptopIP, serverIP, icmpEcho, 1))
	f.Add(icmpErr(serverIP, laptopIP, tcp(laptopIP, serverIP, 1, 22, tcpSYN)))
	f.Add(tcp6(laptop6, server6, 1, 22, tcpSYN))
	f.Add(ipv6(nhDestOpts, laptop6, server6, optsHdr(protoTCP), tcpHdr(1, 22, tcpSYN)))
	f.Add(echo6(laptop6, server6, icmp6Echo, 1))
	flt := serverFilter6()
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parse(b)
		if err == nil && (p.src.Is4() != (b[0]>>4 == 4) || p.dst.Is4() != p.src.Is4()) {
			t.Fatalf("parsed addresses %v %v from version %d", p.src, p.dst, b[0]>>4)
		}
		c := append([]byte(nil), b...)
		in(flt, c)
		out(flt, c)
	})
}

func BenchmarkInboundTracked(b *testing.B) {
	f := serverFilter()
	pkt := tcp(laptopIP, serverIP, 40000, 22, 0x10)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = pkt
	}
	for b.Loop() {
		f.Inbound(bufs, 0)
		bufs = bufs[:64]
	}
}

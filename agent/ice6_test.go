package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5"
)

// TestWithoutLinkLocal: an interface's IPv6 link-local addresses are no
// host candidates (they need a zone the peer cannot use); its global IPv6
// and IPv4 addresses are, and an interface without link-local ones is
// passed through as it is.
func TestWithoutLinkLocal(t *testing.T) {
	ifc := transport.NewInterface(net.Interface{Name: "eth0", Flags: net.FlagUp})
	for _, s := range []string{"10.1.0.11/24", "fe80::1/64", "2001:db8:1::11/64"} {
		ip, n, _ := net.ParseCIDR(s)
		n.IP = ip
		ifc.AddAddress(n)
	}
	got, err := withoutLinkLocal(ifc).Addrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "10.1.0.11/24" || got[1].String() != "2001:db8:1::11/64" {
		t.Errorf("addresses %v, want the IPv4 and the global IPv6 one", got)
	}
	if all, _ := ifc.Addrs(); len(all) != 3 {
		t.Errorf("the shared interface lost addresses: %v", all)
	}
	plain := transport.NewInterface(net.Interface{Name: "eth1"})
	_, n, _ := net.ParseCIDR("192.0.2.1/24")
	plain.AddAddress(n)
	if withoutLinkLocal(plain) != plain {
		t.Error("an interface without link-local addresses was copied")
	}
}

// TestRelayFamily: the family a relay is reached over follows its
// address, and ICE's TURN transports follow the family.
func TestRelayFamily(t *testing.T) {
	for server, want := range map[string]bool{"203.0.113.10:3478": false, "[2001:db8::10]:3478": true, "[::ffff:203.0.113.10]:3478": false} {
		got, err := relayIPv6(context.Background(), server)
		if err != nil || got != want {
			t.Errorf("%s: IPv6 %v (%v), want %v", server, got, err, want)
		}
		nt := relayTarget{IPv6: got}.turnTransports()
		if nt[0].IsIPv6() != want || nt[1].IsIPv6() != want || !nt[1].IsTCP() {
			t.Errorf("%s: transports %v", server, nt)
		}
	}
	if _, err := relayIPv6(context.Background(), "no-port"); err == nil {
		t.Error("a server without a port was accepted")
	}
}

func TestIPv6Candidate(t *testing.T) {
	c6, _ := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: "2001:db8::1", Port: 1, Component: 1})
	c4, _ := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: "192.0.2.1", Port: 1, Component: 1})
	if !ipv6Candidate(c6) || ipv6Candidate(c4) {
		t.Error("ipv6Candidate mixes up the families")
	}
}

// TestPreferIPv6: an IPv6 remote candidate's priority goes up by half a
// type step, so an IPv6 host/host pair outranks the IPv4 one and an IPv6
// srflx still ranks below any host candidate; IPv4 candidates and the
// rest of the candidate are untouched.
func TestPreferIPv6(t *testing.T) {
	host6, _ := ice.UnmarshalCandidate("1 1 udp 2130706431 2001:db8:2::11 53121 typ host ufrag abc generation 0")
	host4, _ := ice.UnmarshalCandidate("2 1 udp 2130706431 10.2.0.11 53121 typ host ufrag abc generation 0")
	srflx6, _ := ice.UnmarshalCandidate("3 1 udp 1694498815 2001:db8:2::11 53121 typ srflx raddr 2001:db8:2::11 rport 53121")
	if got := preferIPv6(host4); got.Priority() != host4.Priority() {
		t.Errorf("IPv4 host priority %d, want %d", got.Priority(), host4.Priority())
	}
	h6 := preferIPv6(host6)
	if h6.Priority() != host6.Priority()+ipv6Boost || h6.Address() != host6.Address() || h6.Port() != host6.Port() || h6.Type() != ice.CandidateTypeHost {
		t.Errorf("IPv6 host became %s", h6.Marshal())
	}
	if s6 := preferIPv6(srflx6); s6.Priority() <= srflx6.Priority() || s6.Priority() >= host4.Priority() {
		t.Errorf("IPv6 srflx priority %d, want above %d and below any host (%d)", s6.Priority(), srflx6.Priority(), host4.Priority())
	}
	pair := func(g, d uint32) uint64 { // RFC 8445 5.1.2.3, g controlling
		lo, hi := min(g, d), max(g, d)
		p := uint64(lo)<<32 + 2*uint64(hi)
		if g > d {
			p++
		}
		return p
	}
	local := host4.Priority() // a local host candidate of either family
	if pair(local, h6.Priority()) <= pair(local, host4.Priority()) {
		t.Error("IPv6 host/host pair does not outrank the IPv4 one")
	}
}

// stunEcho answers Binding requests on pc with the source address, until
// pc is closed.
func stunEcho(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var req stun.Message
		req.Raw = append(req.Raw[:0], buf[:n]...)
		if req.Decode() != nil {
			continue
		}
		ua := from.(*net.UDPAddr)
		resp := stun.MustBuild(&req, stun.BindingSuccess, &stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
		_, _ = pc.WriteTo(resp.Raw, from)
	}
}

// TestSrflxMux: ICE gets no srflx connection for a STUN server of the
// other family than the local address, nor over IPv6 when the server
// sees the local address itself (a copy of the host candidate); it gets
// one otherwise.
func TestSrflxMux(t *testing.T) {
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified}) // wildcard, as the bind's
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	srv, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go stunEcho(srv)
	mux := ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{UDPConn: conn})
	defer mux.Close()
	m := srflxMux{mux}
	local := &net.UDPAddr{IP: net.IPv6loopback, Port: conn.LocalAddr().(*net.UDPAddr).Port}
	server := srv.LocalAddr().(*net.UDPAddr)
	url := "stun:" + server.String()

	if _, err := m.GetConnForURL("u", "stun:203.0.113.10:3478", local); err == nil {
		t.Error("an IPv4 STUN server was paired with an IPv6 local address")
	}
	if _, err := m.GetConnForURL("u", url, &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: local.Port}); err == nil {
		t.Error("an IPv6 STUN server was paired with an IPv4 local address")
	}
	if _, err := mux.GetXORMappedAddr(server, time.Second); err != nil {
		t.Fatalf("STUN over loopback: %v", err)
	}
	if _, err := m.GetConnForURL("u", url, local); err == nil || !strings.Contains(err.Error(), "no srflx candidate needed") {
		t.Errorf("srflx equal to the local address: %v; want it refused", err)
	}
	other := &net.UDPAddr{IP: local.IP, Port: local.Port + 1} // as if a NAT66 moved the port
	if c, err := m.GetConnForURL("u", url, other); err != nil {
		t.Errorf("srflx differing from the local address refused: %v", err)
	} else {
		c.Close()
	}
}

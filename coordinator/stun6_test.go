package coordinator

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
)

// bindingVia sends a Binding request to srv from a socket of network and
// returns the XOR-MAPPED-ADDRESS and the socket's own address.
func bindingVia(t *testing.T, network string, srv *net.UDPAddr) (stun.XORMappedAddress, *net.UDPAddr) {
	t.Helper()
	conn, err := net.DialUDP(network, nil, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("%s binding: %v", network, err)
	}
	var resp stun.Message
	if err := stun.Decode(buf[:n], &resp); err != nil {
		t.Fatal(err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(&resp); err != nil {
		t.Fatal(err)
	}
	return xor, conn.LocalAddr().(*net.UDPAddr)
}

// TestNetcheckInfoIPv6 checks that a server with a public IPv6 address
// lists it as an IPv6 STUN server in netcheck-info and in the netmap
// (apart from the IPv4 lists), and that bad --public-ipv6 values are
// refused.
func TestNetcheckInfoIPv6(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) {
		s.cfg.STUNListen = ":0"
		s.cfg.PublicIPv6 = "2001:db8::10"
	})
	resp, err := http.Get(base + control.PathNetcheckInfo)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info control.NetcheckInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	want := net.JoinHostPort("2001:db8::10", strconv.Itoa(s.STUNAddr().(*net.UDPAddr).Port))
	if len(info.STUN6) != 1 || info.STUN6[0].Addr != want {
		t.Fatalf("netcheck-info STUN6 %+v, want [%s]", info.STUN6, want)
	}
	for _, srv := range info.STUN {
		if strings.Contains(srv.Addr, "2001:db8") {
			t.Errorf("IPv6 server %s in the IPv4 list", srv.Addr)
		}
	}
	// The netmap an agent gets over its stream carries it too.
	reg := registerHTTP(t, base, control.RegisterRequest{AuthKey: newKey(t, s.store, true, 0), Hostname: "v6", PublicKey: newPublicKey(t)})
	m := readMsg(t, dialStream(t, base, reg.Credential))
	if m.Netmap == nil || len(m.Netmap.STUN6) != 1 || m.Netmap.STUN6[0] != want {
		t.Errorf("netmap %+v: stun6 want [%s]", m.Netmap, want)
	}
	for _, a := range m.Netmap.STUN {
		if strings.Contains(a, "2001:db8") {
			t.Errorf("IPv6 server %s in the netmap's IPv4 list", a)
		}
	}

	for _, bad := range []string{"203.0.113.10", "::ffff:203.0.113.10", "fe80::1", "::", "[2001:db8::1]:3478", "coord.example"} {
		_, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), PublicIPv6: bad, Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), "public IPv6") {
			t.Errorf("PublicIPv6 %q: %v; want a 'public IPv6' error", bad, err)
		}
	}
}

// TestSTUNExtraIPv6 checks a deployment whose RFC 5780 addresses are
// specific IPv4 ones: an IPv6 address added to the STUN listen list answers
// Binding requests over IPv6 and is the one advertised, the alternate is
// still the alternate, and a CHANGE-REQUEST to the extra socket gets 420
// (it has no other address to answer from). Without an IPv6 socket, a
// public IPv6 address is refused at startup.
func TestSTUNExtraIPv6(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), func(s *Server) {
		s.cfg.STUNListen = "127.0.0.1:0, [::1]:0"
		s.cfg.STUNAltListen = "127.0.0.2:0"
		s.cfg.PublicIPv6 = "::1"
	})
	if alt := s.STUNAltAddr(); alt == nil || !strings.HasPrefix(alt.String(), "127.0.0.2:") {
		t.Fatalf("alternate %v, want 127.0.0.2", alt)
	}
	var extra *net.UDPAddr
	for _, a := range s.stun.ExtraAddrs() {
		extra = a
	}
	if extra == nil {
		t.Fatal("no extra STUN socket")
	}
	if got := s.stunServers6(); len(got) != 1 || got[0] != extra.String() {
		t.Errorf("STUN6 %v, want [%v]", got, extra)
	}
	xor, local := bindingVia(t, "udp6", extra)
	if !xor.IP.Equal(local.IP) || xor.Port != local.Port {
		t.Errorf("mapped %v, want %v", xor, local)
	}
	conn, err := net.DialUDP("udp6", nil, extra)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest,
		stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, control.STUNChangePort}})
	conn.Write(req.Raw)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var resp stun.Message
	var code stun.ErrorCodeAttribute
	if err := stun.Decode(buf[:n], &resp); err != nil || code.GetFrom(&resp) != nil || code.Code != stun.CodeUnknownAttribute {
		t.Errorf("CHANGE-REQUEST to the extra socket: %v %v, want error 420", &resp, code)
	}

	// An extra socket is no alternate.
	noAlt, _ := startServer(t, t.TempDir(), func(s *Server) { s.cfg.STUNListen = "127.0.0.1:0,[::1]:0" })
	if alt := noAlt.STUNAltAddr(); alt != nil {
		t.Errorf("alternate %v without --stun-alt-listen, want none", alt)
	}

	srv, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), STUNListen: "127.0.0.1:0", PublicIPv6: "::1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "takes IPv6") {
		t.Errorf("public IPv6 without an IPv6 STUN socket: %v; want a 'takes IPv6' error", err)
	}
}

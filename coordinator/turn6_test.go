package coordinator

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

// allocate6 registers a node on s and makes a UDP allocation from [::1]
// to the TURN server at server, asking for an IPv4 relay address.
func allocate6(t *testing.T, s *Server, server string) (net.Addr, error) {
	t.Helper()
	resp := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "v6", PublicKey: newPublicKey(t)})
	user, pass := relay.MintCredential(s.turnSecret, resp.NodeID, time.Now().Add(time.Hour))
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: pc, Username: user, Password: pass, Realm: relay.Realm,
		RequestedAddressFamily: turn.RequestedAddressFamilyIPv4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	relayed, err := c.AllocateWithContext(ctx)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { relayed.Close() })
	return relayed.LocalAddr(), nil
}

// TestEmbeddedTURNIPv6Client checks RFC 6156's cross-family allocation
// from the side the mesh needs: a client that reaches the relay over IPv6
// and asks for IPv4 gets an IPv4 relay address, through which IPv4-only
// peers can reach it. pion's client asks for IPv4 by leaving
// REQUESTED-ADDRESS-FAMILY out (pion/ice does so when its relay candidates
// are IPv4 only), and pion's server then defaults to the family the client
// came in over unless StrictAddressFamily is set: the allocation failed
// with 508 before.
func TestEmbeddedTURNIPv6Client(t *testing.T) {
	s, stop := runServer(t, Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t),
		TURN: TURNConfig{Embedded: true, Listen: "[::]:0", PublicIP: "127.0.0.2", MinPort: 41000, MaxPort: 41999},
	})
	t.Cleanup(func() { stop() })
	server := net.JoinHostPort("::1", strconv.Itoa(s.TURNAddr().(*net.UDPAddr).Port))
	relayed, err := allocate6(t, s, server)
	if err != nil {
		t.Fatalf("allocation over IPv6: %v", err)
	}
	if got := relayed.(*net.UDPAddr); got.IP.To4() == nil || !got.IP.Equal(net.ParseIP("127.0.0.2")) {
		t.Fatalf("relayed address %v, want an IPv4 one on 127.0.0.2", got)
	}
}

// TestEmbeddedTURNOnExtraSTUNSocket checks TURN on the STUN port of a
// deployment whose STUN listen list has an IPv6 address beside the IPv4
// primary: TURN answers on that address too (sharing its socket), so an
// IPv6 client gets an IPv4 relay address there.
func TestEmbeddedTURNOnExtraSTUNSocket(t *testing.T) {
	port := udpTCPPort(t)
	s, stop := runServer(t, Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t),
		STUNListen: "127.0.0.1:" + port + ",[::1]:" + port,
		TURN:       TURNConfig{Embedded: true, Listen: "127.0.0.1:" + port, PublicIP: "127.0.0.2", MinPort: 42000, MaxPort: 42999},
	})
	t.Cleanup(func() { stop() })
	relayed, err := allocate6(t, s, "[::1]:"+port)
	if err != nil {
		t.Fatalf("allocation on the IPv6 STUN socket: %v", err)
	}
	if got := relayed.(*net.UDPAddr); got.IP.To4() == nil {
		t.Fatalf("relayed address %v, want IPv4", got)
	}
}

// TestRelayListIPv6 checks the relay list of a dual-stack deployment: an
// agent that reached the API over IPv4 (or a name) also gets the embedded
// relay at the public IPv6 address, last, so that an IPv6-only host has a
// relay while dual-stack agents keep their first choice; an agent that
// came over IPv6 gets no duplicate; netcheck, which tests TURN from an
// IPv4 socket, is not given the IPv6 entry.
func TestRelayListIPv6(t *testing.T) {
	port := udpTCPPort(t)
	s, stop := runServer(t, Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t),
		STUNListen: "127.0.0.1:" + port + ",[::1]:" + port, PublicIPv6: "::1",
		TURN: TURNConfig{Embedded: true, Listen: "127.0.0.1:" + port, PublicIP: "127.0.0.2", MinPort: 43000, MaxPort: 43999},
	})
	t.Cleanup(func() { stop() })
	urls := func(host string) []string {
		var out []string
		for _, r := range s.relays.forNode(7, host, s.embeddedPorts(), time.Now()) {
			out = append(out, r.URL)
		}
		return out
	}
	want6 := "turn:[::1]:" + port + "?transport=udp"
	got := urls("127.0.0.1")
	if len(got) != 3 || got[2] != want6 {
		t.Errorf("relays for an IPv4 client %q, want the IPv4 ones then %s", got, want6)
	}
	if got := urls("::1"); len(got) != 2 || got[0] != want6 {
		t.Errorf("relays for an IPv6 client %q, want %s first and no duplicate", got, want6)
	}
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	if list := s.turnServerList(r); len(list) != 1 || list[0] != "127.0.0.1:"+port {
		t.Errorf("netcheck's TURN list %q, want only 127.0.0.1:%s", list, port)
	}
}

// udpTCPPort picks a port free for both UDP and TCP on every address: the
// embedded relay listens on both at one port. A port picked for UDP alone
// was taken for TCP when the machine was short of ephemeral ports (a load
// test holding thousands of connections), failing the test for nothing.
func udpTCPPort(t *testing.T) string {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		u.Close()
		if err == nil {
			l.Close()
			return strconv.Itoa(port)
		}
	}
	t.Fatal("no port free for both UDP and TCP in 50 tries")
	return ""
}

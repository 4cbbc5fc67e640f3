package coordinator

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
	"github.com/meshvpn/meshvpn/relay/relaytest"
)

func TestCheckTURNURL(t *testing.T) {
	for _, ok := range []string{"turn:relay.example.com", "turn:203.0.113.5:3478?transport=udp", "turns:relay.example.com:443?transport=tcp"} {
		if err := checkTURNURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "stun:x:3478", "http://x", "turn:", "turn:x:99999", "turn:x:3478?transport=sctp", "turn:user@x"} {
		if err := checkTURNURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// startTURN runs a coordinator with the embedded TURN server on loopback
// and returns it with its TURN address and a registered node's id.
func startTURN(t *testing.T, allow []netip.Prefix) (*Server, string, uint64) {
	t.Helper()
	s, stop := runServer(t, Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t),
		TURN: TURNConfig{Embedded: true, Listen: "127.0.0.1:0", PublicIP: "127.0.0.2", MinPort: 40000, MaxPort: 40999, AllowPeers: allow},
	})
	t.Cleanup(func() { stop() })
	resp := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "n1", PublicKey: newPublicKey(t)})
	return s, s.TURNAddr().String(), resp.NodeID
}

func TestEmbeddedTURNRefusesBadCredentials(t *testing.T) {
	s, addr, node := startTURN(t, nil)
	good, goodPass := relay.MintCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	expired, expiredPass := relay.MintCredential(s.turnSecret, node, time.Now().Add(-time.Minute))
	stranger, strangerPass := relay.MintCredential(s.turnSecret, node+100, time.Now().Add(time.Hour))
	cases := []struct {
		name, user, pass string
		ok               bool
	}{
		{"valid", good, goodPass, true},
		{"wrong password", good, "AAAA" + goodPass[4:], false},
		{"other secret", good, relay.Password([]byte("not the coordinator's secret at all"), good), false},
		{"expired", expired, expiredPass, false},
		{"not a member", stranger, strangerPass, false},
		{"garbage username", "admin", "admin", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := relaytest.Allocate(t, addr, c.user, c.pass)
			if c.ok && err != nil {
				t.Fatalf("allocation refused: %v", err)
			}
			if !c.ok && err == nil {
				t.Fatal("allocation granted")
			}
		})
	}
}

func TestEmbeddedTURNIsNoOpenProxy(t *testing.T) {
	s, addr, node := startTURN(t, nil)
	user, pass := relay.MintCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	c, _, err := relaytest.Allocate(t, addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	// The API itself listens on loopback: relaying there is what an open
	// proxy would allow.
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err == nil {
		t.Error("permission to relay to 127.0.0.1 granted")
	}
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 9}); err == nil {
		t.Error("permission to relay to 10.1.2.3 granted")
	}
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 9}); err != nil {
		t.Errorf("permission to a public address refused: %v", err)
	}

	s2, addr2, node2 := startTURN(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	user2, pass2 := relay.MintCredential(s2.turnSecret, node2, time.Now().Add(time.Hour))
	c2, _, err := relaytest.Allocate(t, addr2, user2, pass2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
		t.Errorf("--turn-allow-peer 127.0.0.0/8: permission refused: %v", err)
	}
}

func TestRelaysOnStream(t *testing.T) {
	l, err := newRelayList(TURNConfig{Embedded: true, URLs: []string{"turn:turn.example.com:3478?transport=udp"}, Secret: "s3cret"}, []byte("embedded-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	list := l.forNode(7, "coord.example.com", embeddedPorts{udp: 3478, tls: 443}, now)
	var urls []string
	for _, r := range list {
		urls = append(urls, r.URL)
		if !strings.HasSuffix(r.Username, ":7") || r.Password == "" || !r.Expires.After(now) {
			t.Errorf("%s: credential %q/%q expires %v: want one minted for node 7", r.URL, r.Username, r.Password, r.Expires)
		}
	}
	want := "turn:coord.example.com:3478?transport=udp turn:coord.example.com:3478?transport=tcp turns:coord.example.com:443?transport=tcp turn:turn.example.com:3478?transport=udp"
	if strings.Join(urls, " ") != want {
		t.Errorf("relays %q, want %q", strings.Join(urls, " "), want)
	}
	if list[3].Password != relay.Password([]byte("s3cret"), list[3].Username) {
		t.Error("external relay's password is not minted from its secret")
	}
	if _, err := newRelayList(TURNConfig{URLs: []string{"turn:x"}}, nil); err == nil {
		t.Error("external relay without credentials accepted")
	}
}

func TestRelayUpdateRenewsCredentials(t *testing.T) {
	s := newTestServer(t)
	defer s.Close()
	l, err := newRelayList(TURNConfig{URLs: []string{"turn:turn.example.com"}, Secret: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.relays = l
	relays := func(frame []byte) control.Relay {
		t.Helper()
		var m control.Message
		if err := json.Unmarshal(frame, &m); err != nil || m.Delta == nil || m.Delta.Relays == nil || len(*m.Delta.Relays) != 1 {
			t.Fatalf("frame %s: want a delta with one relay", frame)
		}
		r := (*m.Delta.Relays)[0]
		if !strings.HasSuffix(r.Username, ":9") {
			t.Errorf("username %q not minted for node 9", r.Username)
		}
		return r
	}
	start := time.Now()
	var due relayDue
	frame := s.relayUpdate(9, "coord.example.com", &due, start)
	if frame == nil {
		t.Fatal("no relays at the start of a stream")
	}
	first := relays(frame)
	next := due.at
	if want := start.Add(l.ttl / 2); !next.Equal(want) {
		t.Errorf("next renewal at %v, want half the TTL later (%v)", next, want)
	}
	if f := s.relayUpdate(9, "coord.example.com", &due, start.Add(time.Minute)); f != nil || !due.at.Equal(next) {
		t.Error("relays sent again before half the TTL")
	}
	frame = s.relayUpdate(9, "coord.example.com", &due, next)
	if frame == nil {
		t.Fatal("no renewal at half the TTL")
	}
	if second := relays(frame); !second.Expires.After(first.Expires) || second.Password == first.Password {
		t.Errorf("renewal expires %v (first %v), same password %v: want a fresh credential", second.Expires, first.Expires, second.Password == first.Password)
	}
	s.relays, _ = newRelayList(TURNConfig{}, nil)
	if f := s.relayUpdate(9, "coord.example.com", &relayDue{}, start); f != nil {
		t.Error("relays sent with no relay configured")
	}
}

// A removed or expired node's TURN credential stops working at once, even
// though it has not expired yet.
func TestEmbeddedTURNRefusesRemovedAndExpiredNodes(t *testing.T) {
	for _, op := range []string{"remove", "expire"} {
		t.Run(op, func(t *testing.T) {
			s, addr, node := startTURN(t, nil)
			user, pass := relay.MintCredential(s.turnSecret, node, time.Now().Add(time.Hour))
			if _, _, err := relaytest.Allocate(t, addr, user, pass); err != nil {
				t.Fatalf("before %s: %v", op, err)
			}
			var err error
			if op == "remove" {
				_, err = s.RemoveNode(context.Background(), "n1")
			} else {
				_, err = s.ExpireNode(context.Background(), "n1")
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := relaytest.Allocate(t, addr, user, pass); err == nil {
				t.Fatalf("allocation granted to a node after %s", op)
			}
		})
	}
}

package coordinator

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/control"
)

func TestTURNCredentialRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	user, pass := mintTURNCredential(secret, 42, now.Add(time.Hour))
	if user != "1800003600:42" {
		t.Errorf("username %q, want expiry:node", user)
	}
	if pass != turnPassword(secret, user) || pass == turnPassword([]byte("other secret 0123456789abcdef012"), user) {
		t.Error("password is not the HMAC of the username under the secret")
	}
	if node, err := parseTURNUsername(user, now); err != nil || node != 42 {
		t.Errorf("parse fresh username: node %d, err %v", node, err)
	}
	if _, err := parseTURNUsername(user, now.Add(2*time.Hour)); err != errTURNExpired {
		t.Errorf("parse expired username: err %v, want %v", err, errTURNExpired)
	}
	for _, bad := range []string{"", "42", "abc:42", "1800003600:", "1800003600:x", "1800003600:0"} {
		if _, err := parseTURNUsername(bad, now); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

// TestTURNPasswordKnownAnswer checks turnPassword against answers computed
// elsewhere, so a wrong MAC or encoding cannot pass by agreeing with itself:
// RFC 2202's HMAC-SHA1 test case 2 (digest effcdf6a…9a7c79, base64-encoded),
// and a REST-scheme username as coturn's use-auth-secret checks it,
// computed with `printf %s USER | openssl dgst -sha1 -hmac SECRET -binary | base64`.
func TestTURNPasswordKnownAnswer(t *testing.T) {
	for _, c := range []struct{ secret, user, want string }{
		{"Jefe", "what do ya want for nothing?", "7/zfauXrL6LSdBbV8YTfnCWafHk="},
		{"0123456789abcdef0123456789abcdef", "1800003600:42", "rs3hno97k1Oa3XbYkND+aDn7mt8="},
	} {
		if got := turnPassword([]byte(c.secret), c.user); got != c.want {
			t.Errorf("turnPassword(%q, %q) = %q, want %q", c.secret, c.user, got, c.want)
		}
	}
}

func TestPeerPolicy(t *testing.T) {
	p := peerPolicy{own: netip.MustParseAddr("10.9.9.9"), allow: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}}
	for ip, want := range map[string]bool{
		"203.0.113.7": true, "8.8.8.8": true, "10.9.9.9": true, "192.168.7.3": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.1.1": false, "100.64.0.5": false, "0.0.0.0": false, "224.0.0.1": false, "255.255.255.255": false,
		"::1": false, "fe80::1": false,
	} {
		if got := p.permit(net.ParseIP(ip)); got != want {
			t.Errorf("permit(%s) = %v, want %v", ip, got, want)
		}
	}
}

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

// allocate makes a TURN allocation with the given credentials over UDP.
func allocate(t *testing.T, server, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: pc, Username: user, Password: pass, Realm: turnRealm})
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
	if err == nil {
		t.Cleanup(func() { relayed.Close() })
	}
	return c, relayed, err
}

func TestEmbeddedTURNRefusesBadCredentials(t *testing.T) {
	s, addr, node := startTURN(t, nil)
	good, goodPass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	expired, expiredPass := mintTURNCredential(s.turnSecret, node, time.Now().Add(-time.Minute))
	stranger, strangerPass := mintTURNCredential(s.turnSecret, node+100, time.Now().Add(time.Hour))
	cases := []struct {
		name, user, pass string
		ok               bool
	}{
		{"valid", good, goodPass, true},
		{"wrong password", good, "AAAA" + goodPass[4:], false},
		{"other secret", good, turnPassword([]byte("not the coordinator's secret at all"), good), false},
		{"expired", expired, expiredPass, false},
		{"not a member", stranger, strangerPass, false},
		{"garbage username", "admin", "admin", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := allocate(t, addr, c.user, c.pass)
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
	user, pass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	c, _, err := allocate(t, addr, user, pass)
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
	user2, pass2 := mintTURNCredential(s2.turnSecret, node2, time.Now().Add(time.Hour))
	c2, _, err := allocate(t, addr2, user2, pass2)
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
	ts := &turnServer{udpPort: 3478, tlsPort: 443}
	now := time.Now()
	list := l.forNode(7, "coord.example.com", ts, now)
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
	if list[3].Password != turnPassword([]byte("s3cret"), list[3].Username) {
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
	frame, next := s.relayUpdate(9, "coord.example.com", time.Time{}, start)
	if frame == nil {
		t.Fatal("no relays at the start of a stream")
	}
	first := relays(frame)
	if want := start.Add(l.ttl / 2); !next.Equal(want) {
		t.Errorf("next renewal at %v, want half the TTL later (%v)", next, want)
	}
	if f, n := s.relayUpdate(9, "coord.example.com", next, start.Add(time.Minute)); f != nil || !n.Equal(next) {
		t.Error("relays sent again before half the TTL")
	}
	frame, _ = s.relayUpdate(9, "coord.example.com", next, next)
	if frame == nil {
		t.Fatal("no renewal at half the TTL")
	}
	if second := relays(frame); !second.Expires.After(first.Expires) || second.Password == first.Password {
		t.Errorf("renewal expires %v (first %v), same password %v: want a fresh credential", second.Expires, first.Expires, second.Password == first.Password)
	}
	s.relays = nil
	if f, _ := s.relayUpdate(9, "coord.example.com", time.Time{}, start); f != nil {
		t.Error("relays sent with no relay configured")
	}
}

// A removed or expired node's TURN credential stops working at once, even
// though it has not expired yet.
func TestEmbeddedTURNRefusesRemovedAndExpiredNodes(t *testing.T) {
	for _, op := range []string{"remove", "expire"} {
		t.Run(op, func(t *testing.T) {
			s, addr, node := startTURN(t, nil)
			user, pass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
			if _, _, err := allocate(t, addr, user, pass); err != nil {
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
			if _, _, err := allocate(t, addr, user, pass); err == nil {
				t.Fatalf("allocation granted to a node after %s", op)
			}
		})
	}
}

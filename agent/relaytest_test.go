package agent

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

var testRelaySecret = []byte("0123456789abcdef0123456789abcdef")

// startTestRelay runs the relay package's server on loopback for nodes
// 1..100.
func startTestRelay(t *testing.T) *relay.Server {
	t.Helper()
	s, err := relay.Listen(relay.Config{
		Listen: "127.0.0.1:0", RelayIP: netip.MustParseAddr("127.0.0.1"), MinPort: 41000, MaxPort: 41999,
		AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Secret:     func() []byte { return testRelaySecret },
		Active:     func(id uint64) bool { return id >= 1 && id <= 100 },
		Members:    func() int { return 100 },
		Log:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testTarget is node's relay target on s.
func testTarget(s *relay.Server, node uint64) relayTarget {
	user, pass := relay.MintCredential(testRelaySecret, node, time.Now().Add(time.Hour))
	addr := s.UDPConn().LocalAddr().String()
	return relayTarget{Relay: control.Relay{URL: "turn:" + addr + "?transport=udp", Username: user, Password: pass}, Transport: "udp", Server: addr}
}

// TestRelayTargetServer: the shared client gets the chosen relay's
// address, transport and credentials.
func TestRelayTargetServer(t *testing.T) {
	tg := testTarget(startTestRelay(t), 1)
	got := tg.server()
	if got.URL != tg.URL || got.Server != tg.Server || got.Transport != "udp" || got.Username != tg.Username || got.Password != tg.Password {
		t.Fatalf("server() = %+v, want the target's %+v", got, tg)
	}
}

// Package loopback runs the relay package's server on loopback, for the
// tests of its clients (the agent's shared relay client and its guards).
// It is apart from relaytest, which the relay package's own tests import.
package loopback

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/relay"
)

// Secret is the TURN secret of every relay Start runs.
var Secret = []byte("0123456789abcdef0123456789abcdef")

// Start runs a relay on 127.0.0.1 for nodes 1..100, closed when t ends.
func Start(t testing.TB) *relay.Server {
	t.Helper()
	s, err := relay.Listen(relay.Config{
		Listen: "127.0.0.1:0", RelayIP: netip.MustParseAddr("127.0.0.1"), MinPort: 41000, MaxPort: 41999,
		AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Secret:     func() []byte { return Secret },
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

// Credential is node's way onto s over UDP: the TURN URL, a credential
// valid for an hour, and the server's address.
func Credential(s *relay.Server, node uint64) (url, user, pass, server string) {
	user, pass = relay.MintCredential(Secret, node, time.Now().Add(time.Hour))
	server = s.UDPConn().LocalAddr().String()
	return "turn:" + server + "?transport=udp", user, pass, server
}

package relay

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// testSecret is the secret test relays verify credentials with.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testNode is the node test credentials are minted for.
const testNode = 7

// startRelay runs a relay on 127.0.0.1, advertising 127.0.0.2, with relay
// ports 40000-40999, for members testNode and testNode+1.
func startRelay(t *testing.T, allow []netip.Prefix) (*Server, string) {
	t.Helper()
	return startRelayWith(t, Config{AllowPeers: allow})
}

// startRelayWith is startRelay with more of cfg; what it leaves zero is
// filled as startRelay does.
func startRelayWith(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Listen, cfg.RelayIP, cfg.MinPort, cfg.MaxPort = "127.0.0.1:0", netip.MustParseAddr("127.0.0.2"), 40000, 40999
	if cfg.Secret == nil {
		cfg.Secret = func() []byte { return testSecret }
	}
	cfg.Active = func(id uint64) bool { return id == testNode || id == testNode+1 }
	cfg.Members = func() int { return 2 }
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.UDPConn().LocalAddr().String()
}

// testCredential is a credential for node, valid for an hour.
func testCredential(node uint64) (user, pass string) {
	return MintCredential(testSecret, node, time.Now().Add(time.Hour))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

package agent

import (
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
	"github.com/meshvpn/meshvpn/relay/relaytest/loopback"
)

// startTestRelay runs the relay package's server on loopback for nodes
// 1..100.
func startTestRelay(t *testing.T) *relay.Server { return loopback.Start(t) }

// testTarget is node's relay target on s.
func testTarget(s *relay.Server, node uint64) relayTarget {
	url, user, pass, addr := loopback.Credential(s, node)
	return relayTarget{Relay: control.Relay{URL: url, Username: user, Password: pass}, Transport: "udp", Server: addr}
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

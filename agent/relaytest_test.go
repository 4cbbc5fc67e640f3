package agent

import (
	"log/slog"
	"net"
	"testing"
	"time"

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

// TestRelayServerDialsOnlyTheRelay: the shared client's stream goes to the
// relay the coordinator listed and nowhere else (a peer's relayed address
// only ever gets a channel on it); a UDP relay gets no dialer.
func TestRelayServerDialsOnlyTheRelay(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Addr, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c.RemoteAddr()
			c.Close()
		}
	}()
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	tg := relayTarget{Relay: control.Relay{URL: "turn:" + ln.Addr().String() + "?transport=tcp"}, Transport: "tcp", Server: ln.Addr().String()}
	srv := a.relayServer(tg)
	c, err := srv.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != ln.Addr().String() {
		t.Fatalf("dialed %s, want the relay %s", c.RemoteAddr(), ln.Addr())
	}
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatal("the relay saw no connection")
	}
	if udp := a.relayServer(relayTarget{Transport: "udp", Server: "203.0.113.10:3478"}); udp.Dial != nil {
		t.Fatal("a UDP relay got a dialer")
	}
}

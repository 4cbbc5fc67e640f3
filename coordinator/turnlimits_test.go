package coordinator

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
	"github.com/meshvpn/meshvpn/relay/relaytest"
)

// startTURNWith runs a coordinator with the embedded TURN server (its own
// socket on loopback, no STUN server) and a registered node.
func startTURNWith(t *testing.T, cfg TURNConfig, log *slog.Logger) (*Server, string, uint64) {
	t.Helper()
	cfg.Embedded, cfg.Listen = true, "127.0.0.1:0"
	if cfg.PublicIP == "" {
		cfg.PublicIP = "127.0.0.1"
	}
	if cfg.MinPort == 0 {
		cfg.MinPort, cfg.MaxPort = 40000, 40999
	}
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: log, TURN: cfg})
	t.Cleanup(func() { stop() })
	resp := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "n1", PublicKey: newPublicKey(t)})
	return s, s.TURNAddr().String(), resp.NodeID
}

// The username of a refused credential is the sender's: it is logged
// short, sanitized and at most a few times a burst.
func TestEmbeddedTURNRefusedCredentialLogBounded(t *testing.T) {
	var buf syncBuffer
	_, addr, _ := startTURNWith(t, TURNConfig{}, slog.New(slog.NewTextHandler(&buf, nil)))
	long := "1800000000:" + strings.Repeat("A", 400)
	for range 40 {
		if _, _, err := relaytest.Allocate(t, addr, long, "x"); err == nil {
			t.Fatal("allocation granted to a forged username")
		}
	}
	lines := 0
	for _, l := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(l, "refused credential") {
			continue
		}
		lines++
		if len(l) > 400 || strings.Contains(l, strings.Repeat("A", 100)) {
			t.Errorf("log line of %d bytes carries the username: %.120s...", len(l), l)
		}
	}
	if lines == 0 || lines > 10 {
		t.Errorf("%d refused-credential lines for 40 refusals, want 1-10", lines)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Relay sockets bind the address --turn-listen names, not every address.
func TestRelaySocketsBindTURNAddress(t *testing.T) {
	s, addr, node := startTURNWith(t, TURNConfig{}, testLogger(t))
	user, pass := relay.MintCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	_, relayed, err := relaytest.Allocate(t, addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	port := relayed.LocalAddr().(*net.UDPAddr).Port
	other, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("relay port %d is taken on 127.0.0.2 too (%v): the relay socket binds every address", port, err)
	}
	other.Close()
}

// Binding requests (the STUN server's, and the TURN server's on its own
// socket) are answered at most a burst at once per source.
func TestSTUNAnswersLimitedPerSource(t *testing.T) {
	srv, err := listenSTUN("127.0.0.1:0", "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	go srv.serve()
	defer srv.close()
	_, turnAddr, _ := startTURNWith(t, TURNConfig{}, testLogger(t))
	for name, server := range map[string]string{"stun": srv.primaryAddr().String(), "turn": turnAddr} {
		t.Run(name, func(t *testing.T) {
			sent, answered := floodBinding(t, "127.0.0.1", server, 3*relay.AnswerBurst)
			if max := relay.AnswerBurst + 2*relay.AnswerPerSec; answered > max {
				t.Errorf("%d Binding requests from one address got %d answers, want at most %d", sent, answered, max)
			}
			if _, answered := floodBinding(t, "127.0.0.2", server, 5); answered != 5 {
				t.Errorf("another address got %d answers to 5 requests", answered)
			}
		})
	}
}

// floodBinding sends n Binding requests from a socket on ip and counts the
// answers.
func floodBinding(t *testing.T, ip, server string, n int) (sent, answered int) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	done := make(chan int)
	go func() {
		got := 0
		buf := make([]byte, 1500)
		for {
			pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := pc.Read(buf); err != nil {
				done <- got
				return
			}
			got++
		}
	}()
	for range n {
		if _, err := pc.WriteToUDP(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, to); err == nil {
			sent++
		}
		if sent%100 == 0 {
			time.Sleep(time.Millisecond) // keep within the socket buffers
		}
	}
	return sent, <-done
}

// A node that leaves loses its allocations at once, not at their expiry.
func TestEmbeddedTURNClosesLeavingNodesAllocations(t *testing.T) {
	for _, op := range []string{"remove", "expire"} {
		t.Run(op, func(t *testing.T) {
			s, addr, node := startTURNWith(t, TURNConfig{}, testLogger(t))
			user, pass := relay.MintCredential(s.turnSecret, node, time.Now().Add(time.Hour))
			for range 2 {
				if _, _, err := relaytest.Allocate(t, addr, user, pass); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if op == "remove" {
				_, err = s.RemoveNode(t.Context(), "n1")
			} else {
				_, err = s.ExpireNode(t.Context(), "n1")
			}
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for s.turn.AllocationCount() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n, m := s.turn.AllocationCount(), s.turn.NodeAllocations(node); n != 0 || m != 0 {
				t.Fatalf("after %s: pion holds %d allocations, the table %d", op, n, m)
			}
		})
	}
}

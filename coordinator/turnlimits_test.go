package coordinator

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
)

func TestHostGuard(t *testing.T) {
	own := newOwnAddrs(netip.MustParseAddr("203.0.113.10"))
	own.iface.Store(&map[netip.Addr]bool{netip.MustParseAddr("198.51.100.10"): true})
	g := hostGuard{min: 50000, max: 50999, own: own}
	for addr, want := range map[string]bool{
		"203.0.113.10:50000": true, "203.0.113.10:50999": true, // the relay range on the relay address
		"203.0.113.10:7": false, "203.0.113.10:3478": false, "203.0.113.10:49999": false, "203.0.113.10:51000": false,
		"198.51.100.10:53": false, "198.51.100.10:50500": true, // another address of the host
		"127.0.0.1:22": false, "127.9.9.9:8080": false, "0.0.0.0:9": false, // loopback, unspecified
		"[::ffff:203.0.113.10]:7": false, // mapped form
		"203.0.113.99:7":          true,  // another host: any port
	} {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.mayReach(ua); got != want {
			t.Errorf("mayReach(%s) = %v, want %v", addr, got, want)
		}
	}
	if g.mayReach(&net.TCPAddr{IP: net.IPv4(203, 0, 113, 99), Port: 80}) {
		t.Error("mayReach accepted a TCP address")
	}
}

func TestSourceLimiter(t *testing.T) {
	l := newSourceLimiter(3, 1)
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("203.0.113.7")
	for i := range 3 {
		if !l.allow(a, now) {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow(a, now) {
		t.Error("fourth request at once allowed")
	}
	if !l.allow(netip.MustParseAddr("::ffff:203.0.113.8"), now) {
		t.Error("another source refused")
	}
	if l.allow(netip.MustParseAddr("::ffff:203.0.113.7"), now) {
		t.Error("the IPv4-mapped form of an exhausted source allowed")
	}
	if !l.allow(a, now.Add(1100*time.Millisecond)) || l.allow(a, now.Add(1100*time.Millisecond)) {
		t.Error("want exactly one token back after a second")
	}
	// IPv6: one /64 shares a bucket.
	for i := range 3 {
		l.allow(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), now)
	}
	if l.allow(netip.MustParseAddr("2001:db8::ffff:1"), now) {
		t.Error("a fourth address of an exhausted /64 allowed")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Error("another /64 refused")
	}
	// Memory stays bounded under a spray of sources.
	l.keyed.MaxKeys = 100
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), now)
	}
	if n := l.keyed.Len(); n > 100 {
		t.Errorf("%d buckets after a spray, want at most 100", n)
	}
}

func TestRelayQuota(t *testing.T) {
	for _, c := range []struct{ members, ports, want int }{
		{1, 16384, 16}, {2, 16384, 16}, {10, 16384, 28}, {1000, 16384, 2008}, {10000, 16384, 4096}, {50, 100, 25}, {50, 40, 16},
	} {
		if got := relayQuota(c.members, c.ports); got != c.want {
			t.Errorf("relayQuota(%d members, %d ports) = %d, want %d", c.members, c.ports, got, c.want)
		}
	}
}

func TestRelayAllocsTable(t *testing.T) {
	quota := 3
	tab := newRelayAllocs(time.Minute, func() int { return quota })
	guard := hostGuard{min: 1, max: 65535, own: newOwnAddrs()}
	now := time.Unix(1000, 0)
	open := func(node uint64, udp bool) (net.PacketConn, error) {
		pc, _, err := tab.open(node, udp, now, func() (net.PacketConn, net.Addr, error) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			return pc, pc.LocalAddr(), nil
		}, guard)
		if err == nil {
			t.Cleanup(func() { pc.Close() })
		}
		return pc, err
	}
	var conns []net.PacketConn
	for range 3 {
		pc, err := open(7, true)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, pc)
	}
	if _, err := open(7, true); err != errQuota || tab.underQuota(7) {
		t.Fatalf("fourth allocation: %v, want %v", err, errQuota)
	}
	if _, err := open(8, false); err != nil {
		t.Fatalf("another node refused: %v", err)
	}
	conns[0].Close()
	if tab.count(7) != 2 || !tab.underQuota(7) {
		t.Fatalf("after a close node 7 holds %d", tab.count(7))
	}
	// conns[1] was granted 30 s and is refreshed; conns[2] asked for an
	// hour and is never refreshed: the table's minute is the most it gets.
	p1, p2 := conns[1].LocalAddr().(*net.UDPAddr).Port, conns[2].LocalAddr().(*net.UDPAddr).Port
	tab.granted(p1, "198.51.100.1:1000", 30*time.Second, now)
	tab.granted(p2, "198.51.100.2:2000", time.Hour, now)
	tab.refreshed("198.51.100.1:1000", 30*time.Second, now.Add(40*time.Second))
	if n := tab.expire(now.Add(50 * time.Second)); n != 0 {
		t.Fatalf("%d allocations closed before their deadline", n)
	}
	if n := tab.expire(now.Add(61 * time.Second)); n != 1 || tab.count(7) != 1 {
		t.Fatalf("at 61 s: closed %d, node holds %d; want the unrefreshed one closed", n, tab.count(7))
	}
	if _, _, err := conns[2].ReadFrom(make([]byte, 10)); err == nil {
		t.Error("expired allocation's socket still open")
	}
	// Node 8's allocation came over TCP: no deadline, pion closes it with
	// its connection.
	if n := tab.expire(now.Add(time.Hour)); n != 1 || tab.count(8) != 1 {
		t.Fatalf("an hour later: closed %d, node 8 holds %d", n, tab.count(8))
	}
	if n := tab.dropNode(8); n != 1 || tab.count(8) != 0 {
		t.Fatalf("dropNode closed %d, node 8 holds %d", n, tab.count(8))
	}
}

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

// An allocation that is not refreshed is closed after the relay's
// lifetime, even when its client asked for (and pion granted) an hour;
// one whose client refreshes lives on.
func TestEmbeddedTURNCapsLifetime(t *testing.T) {
	s, addr, node := startTURNWith(t, TURNConfig{AllocationLifetime: 2 * time.Second}, testLogger(t))
	user, pass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	if _, _, err := allocate(t, addr, user, pass); err != nil { // pion's client: refreshes every second
		t.Fatal(err)
	}
	granted := dialRawTURN(t, addr, user, pass).allocate(50 * time.Minute)
	t.Logf("pion granted %v to the raw client", granted)
	if n := s.turn.srv.AllocationCount(); n != 2 {
		t.Fatalf("%d allocations, want 2", n)
	}
	deadline := time.Now().Add(6 * time.Second)
	for s.turn.srv.AllocationCount() > 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.turn.srv.AllocationCount(); n != 1 {
		t.Fatalf("6 s after the allocations (lifetime 2 s): %d left, want only the refreshed one", n)
	}
}

// The username of a refused credential is the sender's: it is logged
// short, sanitized and at most a few times a burst.
func TestEmbeddedTURNRefusedCredentialLogBounded(t *testing.T) {
	var buf syncBuffer
	_, addr, _ := startTURNWith(t, TURNConfig{}, slog.New(slog.NewTextHandler(&buf, nil)))
	long := "1800000000:" + strings.Repeat("A", 400)
	for range 40 {
		if _, _, err := allocate(t, addr, long, "x"); err == nil {
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
	user, pass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
	_, relayed, err := allocate(t, addr, user, pass)
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
			sent, answered := floodBinding(t, "127.0.0.1", server, 3*stunAnswerBurst)
			if max := stunAnswerBurst + 2*stunAnswerPerSec; answered > max {
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
			user, pass := mintTURNCredential(s.turnSecret, node, time.Now().Add(time.Hour))
			for range 2 {
				if _, _, err := allocate(t, addr, user, pass); err != nil {
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
			for s.turn.srv.AllocationCount() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n, m := s.turn.srv.AllocationCount(), s.turn.allocs.count(node); n != 0 || m != 0 {
				t.Fatalf("after %s: pion holds %d allocations, the table %d", op, n, m)
			}
		})
	}
}

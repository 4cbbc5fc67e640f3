package agent

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshvpn/meshvpn/agent/datapath"
)

// TestPunchedPathIdleWireGuard: on an idle tunnel wireguard-go lets only
// one side send keepalives (receiving one restarts the other's timer), so
// WireGuard's counters may show nothing from the peer for minutes on a
// working birthday path. The path stays up while its own heartbeat is
// answered, and is dropped once that has been silent for punchedSilence.
func TestPunchedPathIdleWireGuard(t *testing.T) {
	p := &peer{a: &Agent{bind: NewBind()}, log: slog.New(slog.DiscardHandler)}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.punched.name = lanePunched
	p.punched.selected = true
	p.punched.started = now.Add(-2 * time.Minute)
	p.live.lastRx = now.Add(-2 * time.Minute) // WireGuard: nothing since the path began
	p.bd.heard.Store(now.Add(-5 * time.Second).UnixNano())
	p.birthdayTickLocked(now)
	if !p.punched.up() {
		t.Fatal("birthday path dropped although its heartbeat was answered 5 s ago (WireGuard idle)")
	}
	p.bd.heard.Store(now.Add(-punchedSilence - time.Second).UnixNano())
	p.live.lastRx = now // WireGuard traffic may come through the relay: no sign for the path
	p.birthdayTickLocked(now)
	if p.punched.up() {
		t.Fatalf("birthday path kept although nothing came on it for %v", punchedSilence+time.Second)
	}
}

// TestBirthdayHeartbeat: the easy side's heartbeat leaves its shared
// socket, the symmetric side's won socket answers it, and each side notes
// that its birthday path brought something from the peer.
func TestBirthdayHeartbeat(t *testing.T) {
	easyBind := NewBind()
	fns, port, err := easyBind.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = easyBind.Close() })
	for _, fn := range fns[:len(fns)-1] { // the bind's filter runs as WireGuard reads
		go func() {
			n := easyBind.BatchSize()
			bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
			for i := range bufs {
				bufs[i] = make([]byte, 1500)
			}
			for {
				if _, err := fn(bufs, sizes, eps); err != nil {
					return
				}
			}
		}()
	}
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	symAddr := sock.LocalAddr().(*net.UDPAddr).AddrPort()
	easyAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	tok := bdayToken{7}

	sym := &peer{a: &Agent{bind: NewBind()}, log: slog.New(slog.DiscardHandler)}
	go sym.readPunched(nil, datapath.NewPunchSocket(sock), easyAddr, tok)
	easy := &peer{a: &Agent{bind: easyBind}, log: slog.New(slog.DiscardHandler)}
	easy.mu.Lock()
	easy.punched.name, easy.punched.selected, easy.punched.endpoint = lanePunched, true, symAddr
	easy.bd.tok = tok
	easy.mu.Unlock()
	go easy.birthdayHeartbeat(tok, symAddr)
	deadline := time.Now().Add(5 * time.Second)
	for easy.bd.heard.Load() == 0 || sym.bd.heard.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s: easy heard %d, symmetric heard %d (want both set)", easy.bd.heard.Load(), sym.bd.heard.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	easy.mu.Lock()
	easy.closed = true // the heartbeat ends at its next tick
	easy.mu.Unlock()
}

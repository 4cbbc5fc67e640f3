package datapath

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.zx2c4.com/wireguard/conn"
)

// TestBindSplitsSTUNFromWireGuard sends a WireGuard-shaped datagram and a
// STUN request to the shared socket over loopback and checks that WireGuard
// sees only the first and ICE's conn only the second, and that ICE's writes
// leave from the shared port.
func TestBindSplitsSTUNFromWireGuard(t *testing.T) {
	b := NewBind(nil)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer b.Close()
	defer b.STUNConn().Close()

	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}

	wg := make([]byte, 32)
	wg[0] = 4
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := peer.WriteTo(req.Raw, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.WriteTo(wg, dst); err != nil {
		t.Fatal(err)
	}

	// Read until WireGuard's message shows up, counting what the filter let through.
	bufs := make([][]byte, b.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	var wgSeen, other int
	deadline := time.Now().Add(5 * time.Second)
	for wgSeen == 0 && time.Now().Before(deadline) {
		n, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		for i := 0; i < n; i++ {
			switch {
			case sizes[i] == 0:
			case classify(bufs[i][:sizes[i]]) == kindWireGuard:
				wgSeen++
			default:
				other++
			}
		}
	}
	if wgSeen != 1 || other != 0 {
		t.Fatalf("WireGuard saw %d WireGuard and %d other packets, want 1 and 0", wgSeen, other)
	}

	got := make([]byte, 1500)
	done := make(chan struct{})
	var n int
	var from net.Addr
	go func() {
		n, from, err = b.STUNConn().ReadFrom(got)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("STUN message never reached ICE's conn")
	}
	if err != nil || string(got[:n]) != string(req.Raw) {
		t.Fatalf("ICE read %d bytes, err %v; want the STUN request", n, err)
	}
	if from.(*net.UDPAddr).Port != peer.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("STUN source %v, want %v", from, peer.LocalAddr())
	}

	// ICE's answer must come from the shared port.
	if _, err := b.STUNConn().WriteTo([]byte("answer"), peer.LocalAddr()); err != nil {
		t.Fatalf("write from ICE: %v", err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, src, err := peer.ReadFromUDPAddrPort(got)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if string(got[:m]) != "answer" || src.Port() != port {
		t.Fatalf("peer got %q from %v, want \"answer\" from port %d", got[:m], src, port)
	}
	if b.STUNConn().LocalAddr().(*net.UDPAddr).Port != int(port) {
		t.Fatalf("ICE conn reports port %v, want %d", b.STUNConn().LocalAddr(), port)
	}
}

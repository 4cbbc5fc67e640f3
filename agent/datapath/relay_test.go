package datapath

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

type recordWriter struct{ got [][]byte }

func (w *recordWriter) Write(p []byte) (int, error) {
	w.got = append(w.got, append([]byte(nil), p...))
	return len(p), nil
}

// TestRelayRoute checks the relay side of the bind: a relayed peer's
// address parses to its relay endpoint, sends go to the allocation's
// writer, and delivered packets come out of the extra receive function
// with that endpoint, in order.
func TestRelayRoute(t *testing.T) {
	r := newRelayPaths()
	r.open()
	defer r.close()
	addr := netip.MustParseAddrPort("203.0.113.10:50123")
	w := &recordWriter{}
	ep := r.add(addr, w)
	if got := r.lookup(addr); got != ep {
		t.Fatalf("lookup: %v, want the added endpoint", got)
	}
	if err := ep.send([][]byte{[]byte("one"), []byte("two")}); err != nil {
		t.Fatal(err)
	}
	if len(w.got) != 2 || string(w.got[0]) != "one" || string(w.got[1]) != "two" {
		t.Fatalf("writer got %q", w.got)
	}

	recv := r.receiveFunc()
	r.deliver([]byte("a"), ep)
	r.deliver([]byte("bb"), ep)
	bufs := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100)}
	sizes := make([]int, 3)
	eps := make([]conn.Endpoint, 3)
	n, err := recv(bufs, sizes, eps)
	if err != nil || n != 2 {
		t.Fatalf("receive: n=%d err=%v, want 2 packets", n, err)
	}
	if !bytes.Equal(bufs[0][:sizes[0]], []byte("a")) || !bytes.Equal(bufs[1][:sizes[1]], []byte("bb")) || eps[0] != ep || eps[1] != ep {
		t.Fatalf("receive: %q %q from %v %v", bufs[0][:sizes[0]], bufs[1][:sizes[1]], eps[0], eps[1])
	}

	// A replaced route is not removed by the old endpoint's cleanup.
	ep2 := r.add(addr, w)
	r.remove(ep)
	if r.lookup(addr) != ep2 {
		t.Fatal("removing a stale endpoint dropped the current route")
	}
	r.remove(ep2)
	if r.lookup(addr) != nil {
		t.Fatal("route still there after remove")
	}

	// Closing unblocks a waiting receive.
	done := make(chan error, 1)
	go func() { _, err := recv(bufs, sizes, eps); done <- err }()
	r.close()
	if err := <-done; err == nil {
		t.Fatal("receive after close returned no error")
	}
}

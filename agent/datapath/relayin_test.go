package datapath

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

// TestReceiveBatches: a reader's batch reaches WireGuard in one receive
// when WireGuard offers room for it, is split in order across receives
// when it does not, and goes back to its reader once copied; single
// deliveries queued behind it come in the same receive when there is room.
func TestReceiveBatches(t *testing.T) {
	r := newRelayPaths()
	r.open()
	defer r.close()
	ep := r.add(netip.MustParseAddrPort("203.0.113.10:50123"), nil)
	free := make(chan *inBatch, 1)
	b := (&RelayClient{}).newInBatch(free)
	for i := range 40 {
		p := append(b.bufs[i][:0], fmt.Sprintf("p%02d", i)...)
		b.msgs = append(b.msgs, inMsg{p: p, ep: ep})
	}
	r.push(b)
	r.deliver([]byte("single"), ep)
	recv := r.receiveFunc()
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	var got []string
	var calls []int
	for len(got) < 41 && len(calls) < 5 {
		n, err := recv(bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, n)
		for i := range n {
			if eps[i] != ep {
				t.Fatalf("packet %d from %v, want the route's endpoint", len(got), eps[i])
			}
			got = append(got, string(bufs[i][:sizes[i]]))
		}
	}
	if len(calls) != 2 || calls[0] != 32 || calls[1] != 9 {
		t.Fatalf("receives returned %v packets, want [32 9]", calls)
	}
	for i := range 40 {
		if got[i] != fmt.Sprintf("p%02d", i) {
			t.Fatalf("packet %d is %q: out of order", i, got[i])
		}
	}
	if got[40] != "single" {
		t.Fatalf("last packet %q, want the single delivery", got[40])
	}
	select {
	case back := <-free:
		if back != b || len(back.msgs) != 0 {
			t.Fatal("the batch came back to its reader not emptied")
		}
	default:
		t.Fatal("the batch did not go back to its reader")
	}
	if q := r.queued.Load(); q != 0 {
		t.Fatalf("%d packets still counted as queued", q)
	}
}

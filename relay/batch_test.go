package relay

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

func listenUDP4(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBatchReaderReadsInBatches: datagrams waiting on the socket come out
// of one system call, in order, with their sources; idle runs only before
// the reader blocks again; a datagram too long for a relay buffer is
// dropped, not cut.
func TestBatchReaderReadsInBatches(t *testing.T) {
	srv, cli := listenUDP4(t), listenUDP4(t)
	const n = relayBatchLen + 5
	for i := range n {
		if _, err := cli.WriteTo([]byte(fmt.Sprintf("pkt-%d", i)), srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			cli.WriteTo(make([]byte, relayBufLen+1), srv.LocalAddr())
		}
	}
	time.Sleep(50 * time.Millisecond) // all queued in the socket
	rd := NewBatchReader(srv)
	idles := 0
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		pkt, from, err := rd.Read(func() { idles++ })
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if want := fmt.Sprintf("pkt-%d", i); string(pkt) != want {
			t.Fatalf("read %d: %q, want %q", i, pkt, want)
		}
		if from.String() != cli.LocalAddr().String() {
			t.Fatalf("read %d from %v, want %v", i, from, cli.LocalAddr())
		}
	}
	// The first batch is full; the rest (and the long one) come in a second.
	if idles != 2 {
		t.Errorf("idle ran %d times for %d datagrams, want 2 (one per batch)", idles, n)
	}
	srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if pkt, _, err := rd.Read(nil); err == nil {
		t.Errorf("read %d bytes more, want a timeout (the long datagram dropped)", len(pkt))
	}
}

// TestBatchWriterSendsAllAndSkipsRefused: one write carries datagrams to
// several destinations in order; one the kernel refuses (an IPv6
// destination from an IPv4 socket) is skipped and reported, and the rest
// still go.
func TestBatchWriterSendsAllAndSkipsRefused(t *testing.T) {
	src, a, b := listenUDP4(t), listenUDP4(t), listenUDP4(t)
	w := newBatchWriter(src)
	var msgs []ipv4.Message
	for i := range 2*relayBatchLen + 1 {
		to := a.LocalAddr()
		if i%2 == 1 {
			to = b.LocalAddr()
		}
		if i == 7 {
			msgs = append(msgs, ipv4.Message{Buffers: [][]byte{[]byte("bad")}, Addr: &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 9}})
		}
		msgs = append(msgs, ipv4.Message{Buffers: [][]byte{[]byte(fmt.Sprint(i))}, Addr: to})
	}
	if err := w.write(msgs); err == nil {
		t.Error("write: no error for the refused datagram")
	}
	for _, tc := range []struct {
		c     *net.UDPConn
		first int
	}{{a, 0}, {b, 1}} {
		buf := make([]byte, 100)
		for i := tc.first; i < 2*relayBatchLen+1; i += 2 {
			tc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := tc.c.ReadFrom(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
			if !bytes.Equal(buf[:n], []byte(fmt.Sprint(i))) {
				t.Fatalf("got %q, want datagram %d", buf[:n], i)
			}
		}
	}
}

// TestBatchDualStack: on a dual-stack socket ([::]:port, how :3478 binds),
// IPv4 clients come in as IPv4-mapped addresses, which the fast path's keys
// unmap, and batches go out to plain IPv4 addresses.
func TestBatchDualStack(t *testing.T) {
	ds, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Skipf("no dual-stack socket: %v", err)
	}
	defer ds.Close()
	if ds.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		t.Skip("the socket is IPv4 only")
	}
	v4 := listenUDP4(t)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ds.LocalAddr().(*net.UDPAddr).Port}
	if _, err := v4.WriteTo([]byte("in"), to); err != nil {
		t.Fatal(err)
	}
	ds.SetReadDeadline(time.Now().Add(2 * time.Second))
	pkt, from, err := NewBatchReader(ds).Read(nil)
	if err != nil || string(pkt) != "in" {
		t.Fatalf("read %q, %v", pkt, err)
	}
	got, ok := addrPort(from)
	if want := v4.LocalAddr().(*net.UDPAddr).AddrPort(); !ok || got != want {
		t.Fatalf("source %v as key %v, want %v", from, got, want)
	}
	if err := newBatchWriter(ds).write([]ipv4.Message{{Buffers: [][]byte{[]byte("out")}, Addr: v4.LocalAddr()}}); err != nil {
		t.Fatalf("write to an IPv4 address from a dual-stack socket: %v", err)
	}
	buf := make([]byte, 10)
	v4.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := v4.ReadFrom(buf); err != nil || string(buf[:n]) != "out" {
		t.Fatalf("IPv4 socket read %q, %v", buf[:n], err)
	}
}

// TestBatchWriterGSO: runs of equal-sized datagrams to one address go out
// as GSO messages (fewer messages than datagrams) and arrive cut back into
// the same datagrams, in order; a shorter datagram or another address
// ends a run.
func TestBatchWriterGSO(t *testing.T) {
	src, a, b := listenUDP4(t), listenUDP4(t), listenUDP4(t)
	w := newBatchWriter(src)
	if !w.gso {
		t.Skip("no UDP GSO in this kernel")
	}
	type sent struct {
		to  *net.UDPConn
		msg []byte
	}
	var want []sent
	var msgs []ipv4.Message
	add := func(to *net.UDPConn, size int) {
		p := bytes.Repeat([]byte{byte(len(want))}, size)
		want = append(want, sent{to, p})
		msgs = append(msgs, ipv4.Message{Buffers: [][]byte{p}, Addr: to.LocalAddr()})
	}
	for range 70 {
		add(a, 1200)
	}
	add(a, 300)
	add(a, 1200)
	add(b, 1200)
	add(b, 1200)
	out := w.coalesce(msgs)
	if len(out) != 4 {
		t.Errorf("%d datagrams in %d messages, want 4 (64, 6+1 short, 1, 2)", len(msgs), len(out))
	}
	if err := w.write(msgs); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	for i, s := range want {
		s.to.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := s.to.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], s.msg) {
			t.Fatalf("datagram %d: got %d bytes of %d, want %d of %d", i, n, buf[0], len(s.msg), s.msg[0])
		}
	}
}

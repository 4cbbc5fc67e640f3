package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestBatch6Fill checks GSO coalescing: runs of equal-sized datagrams
// become one message cut at that size, a shorter datagram ends a run, and
// no message holds more than the kernel's 64 segments.
func TestBatch6Fill(t *testing.T) {
	mk := func(sizes ...int) [][]byte {
		var out [][]byte
		for i, n := range sizes {
			out = append(out, bytes.Repeat([]byte{byte(i)}, n))
		}
		return out
	}
	addr := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}
	var b batch6
	for _, tc := range []struct {
		name  string
		sizes []int
		want  []int // datagrams per message
	}{
		{"one", []int{100}, []int{1}},
		{"run with short tail", []int{100, 100, 100, 40}, []int{4}},
		{"short then long", []int{40, 100}, []int{1, 1}},
		{"short ends run", []int{100, 40, 100, 100}, []int{2, 2}},
		{"bigger starts new", []int{100, 200, 200}, []int{1, 2}},
		{"64 segments at most", append(make([]int, 0, 70), repeat(70, 10)...), []int{64, 6}},
	} {
		bufs := mk(tc.sizes...)
		msgs := b.fill(bufs, addr, true)
		var got []int
		k := 0
		for _, m := range msgs {
			segs := 1
			if len(m.OOB) > 0 {
				size := len(bufs[k])
				segs = (len(m.Buffers[0]) + size - 1) / size
			}
			var want []byte
			for _, p := range bufs[k : k+segs] {
				want = append(want, p...)
			}
			if !bytes.Equal(m.Buffers[0], want) || m.Addr != addr {
				t.Errorf("%s: message %d holds the wrong bytes or address", tc.name, len(got))
			}
			got = append(got, segs)
			k += segs
		}
		if k != len(bufs) || !equalInts(got, tc.want) {
			t.Errorf("%s: segments per message %v, want %v", tc.name, got, tc.want)
		}
		if plain := b.fill(bufs, addr, false); len(plain) != len(bufs) {
			t.Errorf("%s: without GSO %d messages, want %d", tc.name, len(plain), len(bufs))
		}
	}
}

func repeat(n, v int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBindSendsIPv6 sends a batch over IPv6 loopback right after an IPv4
// send (the order that corrupts StdNetBind's IPv6 destinations, bind6.go)
// and checks that every datagram arrives whole, in order, from the shared
// port.
func TestBindSendsIPv6(t *testing.T) {
	peer6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer peer6.Close()
	peer4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer4.Close()
	b := NewBind(nil)
	_, port, err := b.Open(0)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer b.Close()
	if b.s6.Load() == nil {
		t.Skip("the bind has no IPv6 socket here")
	}
	to4 := &conn.StdNetEndpoint{AddrPort: peer4.LocalAddr().(*net.UDPAddr).AddrPort()}
	if err := b.Send([][]byte{[]byte("v4")}, to4); err != nil {
		t.Fatal(err)
	}
	var bufs [][]byte
	for i := range 10 {
		n := 1200
		if i == 9 {
			n = 300
		}
		bufs = append(bufs, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	to6 := &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(netip.IPv6Loopback(), uint16(peer6.LocalAddr().(*net.UDPAddr).Port))}
	if err := b.Send(bufs, to6); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 65536)
	for i, want := range bufs {
		_ = peer6.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := peer6.ReadFromUDPAddrPort(got)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(got[:n], want) || from.Port() != port {
			t.Fatalf("datagram %d: %d bytes from %v, want %d bytes of %q from port %d", i, n, from, len(want), want[0], port)
		}
	}
}

package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// TestOutBatchFill checks the relay send path's layout: every WireGuard
// message gets its ChannelData header; with GSO, runs of equal-sized
// messages share one buffer cut at header+message, a shorter message ends
// a run, and no buffer holds more than 64 segments; without GSO, one
// message per datagram.
func TestOutBatchFill(t *testing.T) {
	addr := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 10), Port: 3478}
	const num = 0x4001
	var b outBatch
	for _, tc := range []struct {
		name  string
		sizes []int
		want  []int // datagrams per message
	}{
		{"one", []int{100}, []int{1}},
		{"run with short tail", []int{100, 100, 100, 40}, []int{4}},
		{"short ends run", []int{100, 40, 100, 100}, []int{2, 2}},
		{"64 segments at most", repeat(70, 200), []int{64, 6}},
	} {
		var bufs [][]byte
		for i, n := range tc.sizes {
			bufs = append(bufs, bytes.Repeat([]byte{byte(i)}, n))
		}
		for _, gso := range []bool{true, false} {
			var got []int
			k := 0
			for _, m := range b.fill(num, bufs, addr, gso) {
				var wire []byte
				for _, p := range m.Buffers {
					wire = append(wire, p...)
				}
				segs := 1
				if len(m.OOB) > 0 {
					seg := 4 + len(bufs[k])
					segs = (len(wire) + seg - 1) / seg
				}
				var want []byte
				for _, p := range bufs[k : k+segs] {
					want = binary.BigEndian.AppendUint16(want, num)
					want = binary.BigEndian.AppendUint16(want, uint16(len(p)))
					want = append(want, p...)
				}
				if !bytes.Equal(wire, want) || m.Addr != addr {
					t.Errorf("%s (gso %v): message %d holds the wrong bytes or address", tc.name, gso, len(got))
				}
				got = append(got, segs)
				k += segs
			}
			want := tc.want
			if !gso {
				want = repeat(len(bufs), 1)
			}
			if k != len(bufs) || !equalInts(got, want) {
				t.Errorf("%s (gso %v): datagrams per message %v, want %v", tc.name, gso, got, want)
			}
		}
	}
}

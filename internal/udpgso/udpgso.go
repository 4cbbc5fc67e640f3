// Package udpgso is UDP generic segmentation offload (UDP_SEGMENT, Linux
// 4.18+): one send of a buffer the kernel cuts into equal-sized datagrams
// (the last may be shorter), which crosses the network stack, and the
// routers of a lab, as one packet until it is cut. The agent's data path
// and the relay send with it.
package udpgso

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxSegments and MaxBytes bound one GSO send: the kernel takes at most 64
// segments (UDP_MAX_SEGMENTS) and a UDP payload below 64 KiB.
const (
	MaxSegments = 64
	MaxBytes    = 65000
)

// Control writes into oob's space the control message that has the kernel
// cut a datagram into size-byte segments.
func Control(oob []byte, size int) []byte {
	n := unix.CmsgSpace(2)
	if cap(oob) < n {
		oob = make([]byte, n)
	}
	oob = oob[:n]
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}

// Supported tells whether the kernel knows UDP_SEGMENT on c.
func Supported(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// Unsupported tells whether a send failed for want of segmentation
// offload on the way (a device without it says so with EIO): the caller
// sends without GSO from then on.
func Unsupported(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}

// EnableGRO asks the kernel to hand c's datagrams over coalesced, as many
// of one flow as arrived together in one buffer (UDP_GRO, Linux 5.0+), and
// tells whether it agreed. A read then carries a control message with the
// segment size (GROSize); oob needs GROSpace bytes for it.
func EnableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// GROSpace is the control buffer a read needs for the segment size.
var GROSpace = unix.CmsgSpace(4)

// GROSize is the segment size a coalesced read's control messages give, 0
// when the datagram was not coalesced.
func GROSize(oob []byte) int {
	for len(oob) > unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2 {
			if len(data) >= 4 {
				return int(binary.NativeEndian.Uint32(data))
			}
			return int(binary.NativeEndian.Uint16(data))
		}
		oob = rest
	}
	return 0
}

// RunEnd is where the GSO run that starts at datagram i of n ends
// (exclusive): datagrams of size(i) bytes, the last of a run maybe
// shorter, at most MaxSegments of them and MaxBytes in all, each with
// overhead bytes the caller puts in front. size may return a value above
// size(i) for a datagram that cannot join (another destination).
func RunEnd(n, i int, size func(int) int, overhead int) int {
	first := size(i)
	j, total := i+1, overhead+first
	for j < n && j-i < MaxSegments {
		s := size(j)
		if s > first || total+overhead+s > MaxBytes {
			break
		}
		total += overhead + s
		j++
		if s < first {
			break // a shorter datagram ends the run
		}
	}
	return j
}

// Bufs lends the buffers a batch copies its GSO runs into, MaxBytes each,
// kept from one batch to the next so that a send allocates none. A run
// fits one buffer (RunEnd bounds it by MaxBytes), so appending to a lent
// buffer never moves it.
type Bufs struct {
	bufs [][]byte
	used int
}

// Reset takes every lent buffer back, for the next batch.
func (b *Bufs) Reset() { b.used = 0 }

// Next lends an empty buffer for one run.
func (b *Bufs) Next() []byte {
	if b.used == len(b.bufs) {
		b.bufs = append(b.bufs, make([]byte, 0, MaxBytes))
	}
	b.used++
	return b.bufs[b.used-1][:0]
}

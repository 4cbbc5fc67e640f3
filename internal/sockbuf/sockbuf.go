// Package sockbuf enlarges UDP socket buffers. Relayed traffic arrives in
// bursts that overflow the kernel's default buffer (about 200 KiB) before
// a Go reader is scheduled, and each lost datagram is a lost TCP segment
// inside the tunnel. wireguard-go grows its own sockets the same way.
package sockbuf

import (
	"net"

	"golang.org/x/sys/unix"
)

// Size is what Grow asks for in each direction.
const Size = 7 << 20

// Grow sets c's receive and send buffers to Size: with SO_*BUFFORCE when
// the process may (CAP_NET_ADMIN), else as far as net.core.[rw]mem_max
// allows. It never fails: a small buffer costs throughput, not function.
func Grow(c net.PacketConn) {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], Size) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], Size)
			}
		}
	})
}

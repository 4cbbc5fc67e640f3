package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/meshvpn/meshvpn/internal/udpgso"
)

// The IPv6 send path. wireguard-go's StdNetBind.Send (the module we pin)
// keeps one pool of destination addresses for both families: an IPv4 send
// leaves a pooled address's IP 4 bytes long, and a later IPv6 send through
// that entry copies only the first 4 bytes of its destination and keeps
// the other 12 from whatever address the entry held before. A dual-stack
// agent then sends IPv6 to addresses like 2001:db8:: (seen in the lab:
// conntrack on the router showed the checks leaving for the coordinator's
// address with the peer's port). So the bind sends IPv6 itself, on a
// duplicate of StdNetBind's IPv6 socket (same socket, so the same source
// address and port the peer and its firewall know), batched with sendmmsg
// and UDP GSO as StdNetBind would. Receiving stays StdNetBind's.

// send6 writes IPv6 datagrams from the shared IPv6 socket.
type send6 struct {
	conn *net.UDPConn
	pc   *ipv6.PacketConn
	gso  atomic.Bool
	pool sync.Pool // *batch6
}

// batch6 is one Send's messages and the buffers GSO coalesces into.
type batch6 struct {
	msgs []ipv6.Message
	bufs udpgso.Bufs
}

// newSend6 opens the send path on a duplicate of the IPv6 socket bound to
// port, or returns an error when there is none (no IPv6 on this host).
func newSend6(port uint16) (*send6, error) {
	fd, err := findUDPSocket(port, unix.AF_INET6)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "udp6-shared")
	c, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("IPv6 socket: %w", err)
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil, errors.New("IPv6 socket is not UDP")
	}
	s := &send6{conn: uc, pc: ipv6.NewPacketConn(uc)}
	s.gso.Store(udpgso.Supported(uc))
	return s, nil
}

func (s *send6) close() { s.conn.Close() }

// send writes bufs to to: with GSO, runs of equal-sized datagrams (the
// last of a run may be shorter) go as one message.
func (s *send6) send(bufs [][]byte, to netip.AddrPort) error {
	b, _ := s.pool.Get().(*batch6)
	if b == nil {
		b = &batch6{}
	}
	defer s.pool.Put(b)
	addr := net.UDPAddrFromAddrPort(to)
	gso := s.gso.Load()
	msgs := b.fill(bufs, addr, gso)
	err := s.write(msgs)
	if err != nil && gso && udpgso.Unsupported(err) {
		// A device without UDP segmentation offload says so with EIO.
		s.gso.Store(false)
		err = s.write(b.fill(bufs, addr, false))
	}
	return err
}

func (s *send6) write(msgs []ipv6.Message) error {
	for len(msgs) > 0 {
		n, err := s.pc.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// fill lays bufs out as messages to addr, coalesced when gso. It reuses
// the batch's messages, buffers and control messages: Send is the data
// path.
func (b *batch6) fill(bufs [][]byte, addr *net.UDPAddr, gso bool) []ipv6.Message {
	n := 0
	b.bufs.Reset()
	for i := 0; i < len(bufs); {
		size := len(bufs[i])
		j := i + 1
		if gso {
			j = udpgso.RunEnd(len(bufs), i, func(k int) int { return len(bufs[k]) }, 0)
		}
		if n == len(b.msgs) {
			b.msgs = append(b.msgs, ipv6.Message{Buffers: make([][]byte, 1)})
		}
		m := &b.msgs[n]
		n++
		m.Addr, m.OOB = addr, m.OOB[:0]
		if j-i == 1 {
			m.Buffers[0] = bufs[i]
			i = j
			continue
		}
		buf := b.bufs.Next()
		for _, p := range bufs[i:j] {
			buf = append(buf, p...)
		}
		m.Buffers[0] = buf
		m.OOB = udpgso.Control(m.OOB, size)
		i = j
	}
	return b.msgs[:n]
}

// findUDPSocket returns a duplicate of this process's UDP socket of family
// (AF_INET, AF_INET6) bound to port: wireguard-go's bind does not expose
// its sockets, so they are found by their port.
func findUDPSocket(port uint16, family int) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1, fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			if family == unix.AF_INET && a.Port == int(port) {
				return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			}
		case *unix.SockaddrInet6:
			if family == unix.AF_INET6 && a.Port == int(port) {
				return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			}
		}
	}
	return -1, fmt.Errorf("no UDP socket of family %d on the bind's port", family)
}

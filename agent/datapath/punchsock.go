package datapath

import (
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The per-peer sockets of a birthday punch (the agent's birthday*.go
// decides when, toward whom and what the probes say). A symmetric NAT
// maps every new socket to a new port, so the hard side opens many
// sockets, each sending one opening packet toward the peer; the socket a
// probe of the peer reaches becomes the peer's path: WireGuard sends
// through it (a route, as for a relay: Bind.RoutePunched) and what the
// peer sends to it reaches WireGuard (PunchSocket.Serve).

// PunchSocket is one socket of a birthday punch.
type PunchSocket struct{ c *net.UDPConn }

// NewPunchSocket wraps a socket of the caller's.
func NewPunchSocket(c *net.UDPConn) *PunchSocket { return &PunchSocket{c: c} }

// OpenPunchSockets opens up to n IPv4 sockets; each sends payload once to
// dest with the given TTL, then goes back to the default TTL for what it
// carries later. Sockets that cannot be opened are left out.
func OpenPunchSockets(n int, dest netip.AddrPort, ttl int, payload []byte) []*PunchSocket {
	to := net.UDPAddrFromAddrPort(dest)
	var socks []*PunchSocket
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			break // out of descriptors or ports: spray with what we have
		}
		if err := setTTL(c, ttl); err != nil {
			c.Close()
			break
		}
		_, werr := c.WriteToUDP(payload, to)
		if err := setTTL(c, 64); err != nil || werr != nil {
			c.Close()
			continue
		}
		socks = append(socks, &PunchSocket{c: c})
	}
	return socks
}

func setTTL(c *net.UDPConn, ttl int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
	}); err != nil {
		return err
	}
	return serr
}

// ReadFrom reads one datagram; from is unmapped.
func (s *PunchSocket) ReadFrom(buf []byte) (int, netip.AddrPort, error) {
	n, from, err := s.c.ReadFromUDPAddrPort(buf)
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

// WriteTo sends one datagram.
func (s *PunchSocket) WriteTo(p []byte, to netip.AddrPort) error {
	_, err := s.c.WriteToUDPAddrPort(p, to)
	return err
}

// SetReadDeadline bounds the reads (zero: no bound).
func (s *PunchSocket) SetReadDeadline(t time.Time) error { return s.c.SetReadDeadline(t) }

// LocalAddr is the socket's local address.
func (s *PunchSocket) LocalAddr() netip.AddrPort { return s.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close closes the socket; Serve returns.
func (s *PunchSocket) Close() error { return s.c.Close() }

// RoutePunched routes WireGuard's packets for peer through s (Route).
func (b *Bind) RoutePunched(s *PunchSocket, peer netip.AddrPort) *Endpoint {
	return b.Route(peer, &punchWriter{c: s.c, to: peer})
}

// punchWriter writes WireGuard messages for one peer from its socket.
type punchWriter struct {
	c  *net.UDPConn
	to netip.AddrPort
}

func (w *punchWriter) Write(b []byte) (int, error) { return w.c.WriteToUDPAddrPort(b, w.to) }

// Serve reads s until it fails (closed), and returns the error. Of what
// comes from peer (the rest is dropped), each datagram is first told to
// heard; WireGuard messages go to WireGuard as from ep (Bind.Deliver), the
// others to other.
func (s *PunchSocket) Serve(b *Bind, ep *Endpoint, peer netip.AddrPort, heard func(), other func([]byte)) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.ReadFrom(buf)
		if err != nil {
			return err
		}
		if from != peer {
			continue
		}
		heard()
		if IsWireGuard(buf[:n]) {
			b.Deliver(buf[:n], ep)
			continue
		}
		other(buf[:n])
	}
}

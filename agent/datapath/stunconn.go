package datapath

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// stunConn is the ICE side of the shared socket: a net.PacketConn whose reads
// return the STUN messages the Bind diverted and whose writes go out of the
// Bind's socket. pion/ice's UDP mux reads from it as from a real socket.
type stunConn struct {
	bind *Bind
	in   chan stunPacket

	closeOnce sync.Once
	closed    chan struct{}
}

type stunPacket struct {
	b    []byte
	from netip.AddrPort
}

func newSTUNConn(b *Bind) *stunConn {
	return &stunConn{bind: b, in: make(chan stunPacket, 512), closed: make(chan struct{})}
}

// deliver queues a copy of p; when ICE falls behind the packet is dropped, as
// a full socket buffer would drop it. It never blocks the WireGuard path.
func (c *stunConn) deliver(p []byte, from netip.AddrPort) {
	select {
	case c.in <- stunPacket{b: append([]byte(nil), p...), from: from}:
	default:
	}
}

func (c *stunConn) ReadFrom(buf []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		n := copy(buf, p.b)
		return n, net.UDPAddrFromAddrPort(p.from), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *stunConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return 0, err
		}
		to = ap
	}
	if err := c.bind.SendTo(p, to); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *stunConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// LocalAddr is the IPv6 wildcard on the shared port: ICE's mux then lists
// the host's IPv4 and IPv6 interface addresses as host candidates on that
// port (the IPv4 wildcard would list only IPv4 ones). The bind has a
// socket of each family on the port; a host without IPv6 has no IPv6
// addresses to list.
func (c *stunConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv6unspecified, Port: int(c.bind.Port())}
}

// Deadlines are not needed: the mux closes the conn to stop its reader.
func (c *stunConn) SetDeadline(time.Time) error      { return nil }
func (c *stunConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stunConn) SetWriteDeadline(time.Time) error { return nil }

package relay

import (
	"net"
	"sync"
	"time"
)

// SharedConn gives the embedded TURN server the STUN server's primary
// socket, so STUN and TURN answer on one port as clients expect: the STUN
// server answers Binding requests itself (with the RFC 5780 attributes
// netcheck needs) and passes every other datagram - TURN requests,
// indications, ChannelData - here.
type SharedConn struct {
	sock net.PacketConn
	in   chan sharedPacket
	// side, when set (before the STUN server serves), relays ChannelData
	// of bound channels without the hand-off (relayfast.go).
	side *clientSide

	closeOnce sync.Once
	done      chan struct{}
}

type sharedPacket struct {
	b    []byte
	from net.Addr
}

// sharedQueueLen bounds datagrams waiting for the TURN server; beyond it
// they are dropped, as a full socket buffer would.
const sharedQueueLen = 1024

func NewSharedConn(sock net.PacketConn) *SharedConn {
	return &SharedConn{sock: sock, in: make(chan sharedPacket, sharedQueueLen), done: make(chan struct{})}
}

// Relay takes ChannelData for a bound channel onto the fast path.
func (c *SharedConn) Relay(p []byte, from net.Addr) bool {
	return c.side != nil && c.side.relay(p, from)
}

// Flush sends what Relay queued.
func (c *SharedConn) Flush() {
	if c.side != nil {
		c.side.flush()
	}
}

// Deliver queues a datagram that arrived on the shared socket.
func (c *SharedConn) Deliver(p []byte, from net.Addr) {
	select {
	case c.in <- sharedPacket{b: append([]byte(nil), p...), from: from}:
	default:
	}
}

func (c *SharedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-c.in:
		return copy(p, pkt.b), pkt.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *SharedConn) WriteTo(p []byte, to net.Addr) (int, error) { return c.sock.WriteTo(p, to) }

// Close ends the TURN server's reads; the socket belongs to the STUN server.
func (c *SharedConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

func (c *SharedConn) LocalAddr() net.Addr                { return c.sock.LocalAddr() }
func (c *SharedConn) SetDeadline(t time.Time) error      { return nil }
func (c *SharedConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *SharedConn) SetWriteDeadline(t time.Time) error { return nil }

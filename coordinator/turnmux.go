package coordinator

import (
	"net"
	"sync"
	"time"
)

// sharedConn gives the embedded TURN server the STUN server's primary
// socket, so STUN and TURN answer on one port as clients expect: the STUN
// server answers Binding requests itself (with the RFC 5780 attributes
// netcheck needs) and passes every other datagram - TURN requests,
// indications, ChannelData - here.
type sharedConn struct {
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

func newSharedConn(sock net.PacketConn) *sharedConn {
	return &sharedConn{sock: sock, in: make(chan sharedPacket, sharedQueueLen), done: make(chan struct{})}
}

// relay takes ChannelData for a bound channel onto the fast path.
func (c *sharedConn) relay(p []byte, from net.Addr) bool {
	return c.side != nil && c.side.relay(p, from)
}

// flush sends what relay queued.
func (c *sharedConn) flush() {
	if c.side != nil {
		c.side.flush()
	}
}

// deliver queues a datagram that arrived on the shared socket.
func (c *sharedConn) deliver(p []byte, from net.Addr) {
	select {
	case c.in <- sharedPacket{b: append([]byte(nil), p...), from: from}:
	default:
	}
}

func (c *sharedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-c.in:
		return copy(p, pkt.b), pkt.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *sharedConn) WriteTo(p []byte, to net.Addr) (int, error) { return c.sock.WriteTo(p, to) }

// Close ends the TURN server's reads; the socket belongs to the STUN server.
func (c *sharedConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

func (c *sharedConn) LocalAddr() net.Addr                { return c.sock.LocalAddr() }
func (c *sharedConn) SetDeadline(t time.Time) error      { return nil }
func (c *sharedConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *sharedConn) SetWriteDeadline(t time.Time) error { return nil }

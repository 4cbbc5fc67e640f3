package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
)

// The relay's fast data path. pion/turn keeps the control side (Allocate,
// Refresh, CreatePermission, ChannelBind, authentication, Send and Data
// indications), but it relays each datagram with a system call of its own,
// and ChannelData reaching the STUN port crossed a channel to pion's read
// loop. pion reports every channel binding it makes and removes (its
// EventHandler, also on expiry and when an allocation closes); the fast
// path mirrors them, and relays ChannelData of a bound channel itself, in
// both directions, in batches (recvmmsg/sendmmsg), in the goroutine that
// read it. Everything else still goes to pion.

// chanKey names a channel binding on a client-facing socket: the client's
// address and the channel number.
type chanKey struct {
	client netip.AddrPort
	number uint16
}

// fastChan is one channel binding as the fast path needs it.
type fastChan struct {
	key    chanKey
	conn   *relayConn   // the allocation's relay socket
	peer   *net.UDPAddr // where the channel's data goes
	client *net.UDPAddr
	side   *clientSide // the socket the client talks to
}

// clientSide is one client-facing UDP socket of the relay, with the
// channels bound on it.
type clientSide struct {
	w     *batchWriter
	mu    sync.RWMutex
	chans map[chanKey]*fastChan
	// dirty are the relay sockets with ChannelData queued since the last
	// flush; only the socket's reading goroutine touches it.
	dirty []*relayConn
}

func newClientSide(c *net.UDPConn) *clientSide {
	return &clientSide{w: newBatchWriter(c), chans: map[chanKey]*fastChan{}}
}

// addrPort is a UDP address as a map key (IPv4-mapped addresses unmapped).
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(u.Port)), true
}

// channelDataHeader is the ChannelData header: channel number and length.
const channelDataHeader = 4

// relay takes pkt, read from from, when it is ChannelData on a channel
// bound on this socket: its data is queued on the allocation's relay
// socket, and goes at the next flush. Anything else (STUN, a channel not
// bound, a bad length) is left to pion, which answers or reports it.
func (s *clientSide) relay(pkt []byte, from net.Addr) bool {
	// Channel numbers are 0x4000-0x7FFF; STUN messages start with 00.
	if len(pkt) < channelDataHeader || pkt[0]&0xC0 != 0x40 {
		return false
	}
	length := int(binary.BigEndian.Uint16(pkt[2:4]))
	if channelDataHeader+length > len(pkt) {
		return false
	}
	client, ok := addrPort(from)
	if !ok {
		return false
	}
	s.mu.RLock()
	ch := s.chans[chanKey{client, binary.BigEndian.Uint16(pkt[0:2])}]
	s.mu.RUnlock()
	if ch == nil {
		return false
	}
	if ch.conn.queueToPeer(pkt[channelDataHeader:channelDataHeader+length], ch.peer) {
		s.dirty = append(s.dirty, ch.conn)
	}
	return true
}

// flush sends what relay queued; the read buffers it points into are
// about to be reused.
func (s *clientSide) flush() {
	for i, c := range s.dirty {
		c.flushToPeers()
		s.dirty[i] = nil
	}
	s.dirty = s.dirty[:0]
}

func (s *clientSide) add(ch *fastChan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chans[ch.key] = ch
}

func (s *clientSide) remove(ch *fastChan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chans[ch.key] == ch {
		delete(s.chans, ch.key)
	}
}

// relayFast is the relay's side of a fast path: the relay socket read and
// written in batches, and the peers bound to a channel.
type relayFast struct {
	rd    *BatchReader // only pion's relay loop reads (relayConn.ReadFrom)
	wr    *batchWriter // to peers
	mu    sync.RWMutex // guards peers
	peers map[netip.AddrPort]*fastChan

	// toPeers is ChannelData data queued for peers; only the
	// client-facing socket's reading goroutine touches it.
	toPeers []ipv4.Message
	// toClient is ChannelData framed for the client; only pion's relay
	// loop touches it.
	toClient     []ipv4.Message
	toClientBufs [][]byte
	toClientSide *clientSide
}

func newRelayFast(c *net.UDPConn) *relayFast {
	f := &relayFast{rd: NewBatchReader(c), wr: newBatchWriter(c), peers: map[netip.AddrPort]*fastChan{},
		toPeers: make([]ipv4.Message, 0, relayBatchLen), toClient: make([]ipv4.Message, 0, relayBatchLen),
		toClientBufs: make([][]byte, relayBatchLen)}
	for i := range f.toClientBufs {
		f.toClientBufs[i] = make([]byte, 0, relayBufLen+3)
	}
	return f
}

// queueToPeer queues data for peer on the relay socket, unless the host
// guard forbids it (pion would have failed the write the same way); it
// tells whether the queue was empty before, so the caller marks it dirty.
func (c *relayConn) queueToPeer(data []byte, peer *net.UDPAddr) bool {
	f := c.fast
	if !c.guard.mayReach(peer) {
		return false
	}
	if len(f.toPeers) == cap(f.toPeers) {
		c.flushToPeers()
	}
	f.toPeers = append(f.toPeers, ipv4.Message{Buffers: [][]byte{data}, Addr: c.hairpin.out(peer)})
	c.meter.out(len(data))
	return len(f.toPeers) == 1
}

func (c *relayConn) flushToPeers() {
	f := c.fast
	if len(f.toPeers) == 0 {
		return
	}
	f.wr.write(f.toPeers) // a datagram the kernel refuses is lost, as in pion
	clear(f.toPeers)
	f.toPeers = f.toPeers[:0]
}

// queueToClient frames data from a channel-bound peer as ChannelData for
// the client, padded to 4 bytes as pion does.
func (c *relayConn) queueToClient(data []byte, ch *fastChan) {
	f := c.fast
	if len(f.toClient) == cap(f.toClient) || (f.toClientSide != nil && f.toClientSide != ch.side) {
		c.flushToClient()
	}
	buf := f.toClientBufs[len(f.toClient)][:0]
	buf = binary.BigEndian.AppendUint16(buf, ch.key.number)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(data)))
	buf = append(buf, data...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	f.toClientBufs[len(f.toClient)] = buf
	f.toClient = append(f.toClient, ipv4.Message{Buffers: [][]byte{buf}, Addr: ch.client})
	f.toClientSide = ch.side
}

func (c *relayConn) flushToClient() {
	f := c.fast
	if len(f.toClient) == 0 {
		return
	}
	f.toClientSide.w.write(f.toClient)
	clear(f.toClient)
	f.toClient = f.toClient[:0]
}

// readFast is ReadFrom on the fast path: datagrams from channel-bound
// peers are framed and sent to the client in batches, and only the others
// (for Data indications, or to be dropped for want of a permission) are
// handed to pion.
func (c *relayConn) readFast(p []byte) (int, net.Addr, error) {
	f := c.fast
	for {
		pkt, from, err := f.rd.Read(c.flushToClient)
		if err != nil {
			return 0, from, err
		}
		if !c.guard.mayReach(from) {
			continue
		}
		from = c.hairpin.in(from)
		c.meter.in(len(pkt))
		if ap, ok := addrPort(from); ok {
			f.mu.RLock()
			ch := f.peers[ap]
			f.mu.RUnlock()
			if ch != nil {
				c.queueToClient(pkt, ch)
				continue
			}
		}
		c.flushToClient()
		return copy(p, pkt), from, nil
	}
}

// bind mirrors a channel pion bound on this allocation.
func (c *relayConn) bind(ch *fastChan) {
	ap, ok := addrPort(ch.peer)
	if !ok {
		return
	}
	f := c.fast
	f.mu.Lock()
	if old := f.peers[ap]; old != nil {
		old.side.remove(old)
	}
	f.peers[ap] = ch
	f.mu.Unlock()
	ch.side.add(ch)
}

// unbind forgets a channel pion removed (expired, or its allocation
// closed).
func (c *relayConn) unbind(peer net.Addr, number uint16) {
	ap, ok := addrPort(peer)
	if !ok {
		return
	}
	f := c.fast
	f.mu.Lock()
	ch := f.peers[ap]
	if ch != nil && ch.key.number == number {
		delete(f.peers, ap)
	} else {
		ch = nil
	}
	f.mu.Unlock()
	if ch != nil {
		ch.side.remove(ch)
	}
}

// unbindAll forgets every channel of a closing allocation.
func (c *relayConn) unbindAll() {
	f := c.fast
	f.mu.Lock()
	chans := make([]*fastChan, 0, len(f.peers))
	for ap, ch := range f.peers {
		chans = append(chans, ch)
		delete(f.peers, ap)
	}
	f.mu.Unlock()
	for _, ch := range chans {
		ch.side.remove(ch)
	}
}

// fastSides are the client-facing sockets with a fast path, by local
// address: pion names a channel's socket by it.
type fastSides struct {
	allocs *relayAllocs
	byAddr map[string]*clientSide
}

// attach gives pc, a client-facing socket as pion sees it, a fast path if
// its socket is a *net.UDPConn: the STUN server's reads for a shared
// socket, the watch's for one of its own.
func (f *fastSides) attach(pc net.PacketConn) {
	switch c := pc.(type) {
	case *watchConn:
		if sc, ok := c.PacketConn.(*SharedConn); ok {
			f.attach(sc)
			return
		}
		if uc, ok := c.PacketConn.(*net.UDPConn); ok {
			c.side, c.rd = newClientSide(uc), NewBatchReader(uc)
			f.byAddr[uc.LocalAddr().String()] = c.side
		}
	case *SharedConn:
		if uc, ok := c.sock.(*net.UDPConn); ok {
			c.side = newClientSide(uc)
			f.byAddr[uc.LocalAddr().String()] = c.side
		}
	}
}

// channelCreated mirrors a channel pion bound (its OnChannelCreated).
// Channels of TCP and TLS clients stay with pion.
func (f *fastSides) channelCreated(src, dst net.Addr, protocol, _, _ string, relay, peer net.Addr, number uint16) {
	side := f.byAddr[dst.String()]
	c := f.relayConn(relay)
	client, ok1 := addrPort(src)
	p, ok2 := peer.(*net.UDPAddr)
	if protocol != "UDP" || side == nil || c == nil || c.fast == nil || !ok1 || !ok2 {
		return
	}
	c.bind(&fastChan{key: chanKey{client, number}, conn: c, peer: p,
		client: net.UDPAddrFromAddrPort(client), side: side})
}

// channelDeleted forgets a channel pion removed (its OnChannelDeleted).
func (f *fastSides) channelDeleted(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	if c := f.relayConn(relay); c != nil && c.fast != nil {
		c.unbind(peer, number)
	}
}

func (f *fastSides) relayConn(relay net.Addr) *relayConn {
	u, ok := relay.(*net.UDPAddr)
	if !ok {
		return nil
	}
	return f.allocs.conn(u.Port)
}

// channels is how many channels the fast path relays (tests).
func (f *fastSides) channels() int {
	n := 0
	for _, s := range f.byAddr {
		s.mu.RLock()
		n += len(s.chans)
		s.mu.RUnlock()
	}
	return n
}

package datapath

import (
	"io"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// Endpoint is a WireGuard endpoint reached through a writer of its own
// instead of the shared socket: a TURN allocation (the peer's relayed
// address, and the relay session's connection or channel to write to),
// or the socket a birthday punch won. WireGuard treats it like any
// endpoint (and roams to it when packets arrive through it); Bind.Send
// recognises it and writes through its writer.
type Endpoint struct {
	addr netip.AddrPort
	w    io.Writer
}

func (e *Endpoint) ClearSrc()           {}
func (e *Endpoint) SrcToString() string { return "" }
func (e *Endpoint) DstToString() string { return e.addr.String() }
func (e *Endpoint) DstToBytes() []byte  { b, _ := e.addr.MarshalBinary(); return b }
func (e *Endpoint) DstIP() netip.Addr   { return e.addr.Addr() }
func (e *Endpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// Addr is the peer's address the endpoint stands for.
func (e *Endpoint) Addr() netip.AddrPort { return e.addr }

// relayedPacket is a WireGuard message that arrived through a relay.
type relayedPacket struct {
	buf *[]byte
	n   int
	ep  conn.Endpoint
}

// relayQueueLen bounds the relayed packets waiting for WireGuard; beyond it
// packets are dropped, as a full socket buffer would.
const relayQueueLen = 1024

var relayBufPool = sync.Pool{New: func() any { b := make([]byte, 65535); return &b }}

// Route routes WireGuard packets for addr through w; the returned
// endpoint is what ParseEndpoint gives for addr from now on.
func (b *Bind) Route(addr netip.AddrPort, w io.Writer) *Endpoint { return b.relays.add(addr, w) }

// Reroute makes ep the route for its address again.
func (b *Bind) Reroute(ep *Endpoint) { b.relays.put(ep) }

// Unroute drops ep's route if it is still the one for its address.
func (b *Bind) Unroute(ep *Endpoint) { b.relays.remove(ep) }

// RouteFor is the route for addr, nil when it has none.
func (b *Bind) RouteFor(addr netip.AddrPort) *Endpoint { return b.relays.lookup(addr) }

// Deliver hands WireGuard a message that came through a route of ours
// (a relay or a birthday socket), from ep as WireGuard should see it
// (roam.go). It copies p; when WireGuard falls behind it drops it.
func (b *Bind) Deliver(p []byte, ep conn.Endpoint) { b.relays.deliver(p, ep) }

// relayPaths is the part of Bind that routes by endpoint.
type relayPaths struct {
	mu     sync.RWMutex
	routes map[netip.AddrPort]*Endpoint
	in     chan relayedPacket
	done   chan struct{} // closed by Close; Open makes a new one
}

func newRelayPaths() *relayPaths {
	return &relayPaths{routes: make(map[netip.AddrPort]*Endpoint), in: make(chan relayedPacket, relayQueueLen)}
}

// add routes WireGuard packets for addr through w; the returned endpoint is
// what ParseEndpoint gives for addr from now on.
func (r *relayPaths) add(addr netip.AddrPort, w io.Writer) *Endpoint {
	ep := &Endpoint{addr: addr, w: w}
	r.mu.Lock()
	r.routes[addr] = ep
	r.mu.Unlock()
	return ep
}

// remove drops ep's route if it is still the one for its address.
func (r *relayPaths) remove(ep *Endpoint) {
	r.mu.Lock()
	if r.routes[ep.addr] == ep {
		delete(r.routes, ep.addr)
	}
	r.mu.Unlock()
}

// put routes WireGuard packets for ep's address through ep.
func (r *relayPaths) put(ep *Endpoint) {
	r.mu.Lock()
	r.routes[ep.addr] = ep
	r.mu.Unlock()
}

func (r *relayPaths) lookup(addr netip.AddrPort) *Endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes[addr]
}

// deliver queues a WireGuard message that came through a relay, from ep
// as WireGuard sees it (roam.go).
func (r *relayPaths) deliver(p []byte, ep conn.Endpoint) {
	b := relayBufPool.Get().(*[]byte)
	n := copy(*b, p)
	select {
	case r.in <- relayedPacket{buf: b, n: n, ep: ep}:
	default:
		relayBufPool.Put(b)
	}
}

func (r *relayPaths) open() {
	r.mu.Lock()
	r.done = make(chan struct{})
	r.mu.Unlock()
}

func (r *relayPaths) close() {
	r.mu.Lock()
	if r.done != nil {
		close(r.done)
		r.done = nil
	}
	r.mu.Unlock()
}

// receiveFunc is the extra conn.ReceiveFunc WireGuard polls for relayed
// packets: it blocks for one, then takes whatever else is queued.
func (r *relayPaths) receiveFunc() conn.ReceiveFunc {
	r.mu.RLock()
	done := r.done
	r.mu.RUnlock()
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var pkt relayedPacket
		select {
		case pkt = <-r.in:
		case <-done:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(packets[n], (*pkt.buf)[:pkt.n])
			eps[n] = pkt.ep
			relayBufPool.Put(pkt.buf)
			n++
			if n == len(packets) {
				return n, nil
			}
			select {
			case pkt = <-r.in:
			default:
				return n, nil
			}
		}
	}
}

// send writes WireGuard messages through ep's relay.
func (e *Endpoint) send(bufs [][]byte) error {
	if ch, ok := e.w.(*RelayChan); ok {
		return ch.writeBatch(bufs)
	}
	for _, b := range bufs {
		if _, err := e.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

package datapath

import (
	"io"
	"net/netip"
	"sync"
	"sync/atomic"

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
	in     chan *inBatch // relayin.go
	queued atomic.Int64  // packets in the batches of in
	done   chan struct{} // closed by Close; Open makes a new one
}

func newRelayPaths() *relayPaths {
	return &relayPaths{routes: make(map[netip.AddrPort]*Endpoint), in: make(chan *inBatch, relayQueueLen)}
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

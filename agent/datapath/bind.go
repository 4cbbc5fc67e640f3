package datapath

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// Bind is the wireguard-go conn.Bind of the agent. It owns the one UDP socket
// that WireGuard and ICE share, so that the NAT mapping ICE's checks open is
// the very one WireGuard then uses.
//
// The socket and its batched I/O (recvmmsg/sendmmsg, UDP GSO/GRO) are those
// of wireguard-go's own StdNetBind, which Bind wraps: the data path costs
// what stock wireguard-go costs. Bind adds a filter on the receive path that
// takes STUN messages out of WireGuard's batch and hands them to ICE.
//
// StdNetBind has two sockets on the port, IPv4 and IPv6 (the agent's
// ice6.go says why we keep two); IPv6 is sent through send6 (bind6.go).
type Bind struct {
	inner conn.Bind

	mu   sync.RWMutex
	open bool
	port uint16
	fd4  int                   // a duplicate of the IPv4 socket for low-TTL sends, -1 without
	s6   atomic.Pointer[send6] // IPv6 sends; nil without an IPv6 socket

	stun   *stunConn
	relays *relayPaths
	divert Divert
}

// Divert is offered every packet of the shared socket that is not
// WireGuard, with its source, and tells whether it took it. A STUN
// message it does not take goes to ICE (STUNConn); anything else is
// dropped. It runs on WireGuard's receive path: it must not block.
type Divert func(p []byte, from netip.AddrPort) bool

// NewBind returns a Bind; its STUN side is Bind.STUNConn. divert (nil
// for none) sees the packets that are neither WireGuard's nor ICE's.
func NewBind(divert Divert) *Bind {
	b := &Bind{inner: conn.NewStdNetBind(), relays: newRelayPaths(), fd4: -1, divert: divert}
	b.stun = newSTUNConn(b)
	return b
}

// STUNConn is the packet conn to give ICE's UDP mux: it reads the STUN
// messages that arrive on the shared socket and writes through it.
func (b *Bind) STUNConn() net.PacketConn { return b.stun }

// Port is the bound UDP port, 0 before the first Open.
func (b *Bind) Port() uint16 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.port
}

func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	fd4, ferr := findUDP4Socket(actual)
	s6, err6 := newSend6(actual)
	if err6 != nil {
		slog.Debug("no IPv6 underlay", "err", err6)
	}
	if old := b.s6.Swap(s6); old != nil {
		old.close()
	}
	b.mu.Lock()
	b.open = true
	b.port = actual
	if b.fd4 >= 0 {
		unix.Close(b.fd4)
	}
	b.fd4 = fd4
	b.mu.Unlock()
	if ferr != nil {
		slog.Warn("no low-TTL opening packets", "err", ferr)
	}
	wrapped := make([]conn.ReceiveFunc, len(fns), len(fns)+1)
	for i, fn := range fns {
		wrapped[i] = b.filter(fn)
	}
	// Packets that come through TURN relays reach WireGuard here.
	b.relays.open()
	wrapped = append(wrapped, b.relays.receiveFunc())
	return wrapped, actual, nil
}

// filter passes WireGuard messages through untouched, offers the rest to
// divert and gives the STUN it leaves to ICE. wireguard-go skips any
// message shorter than its minimum size, so a diverted or unknown packet
// is dropped from the batch by zeroing its size.
func (b *Bind) filter(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		for i := 0; i < n; i++ {
			p := packets[i][:sizes[i]]
			if IsWireGuard(p) {
				continue
			}
			from := endpointAddr(eps[i])
			if (b.divert == nil || !b.divert(p, from)) && IsSTUN(p) {
				b.stun.deliver(p, from)
			}
			sizes[i] = 0
		}
		return n, err
	}
}

func endpointAddr(ep conn.Endpoint) netip.AddrPort {
	if e, ok := ep.(*conn.StdNetEndpoint); ok {
		return e.AddrPort
	}
	a, _ := netip.ParseAddrPort(ep.DstToString())
	return a
}

func (b *Bind) Close() error {
	b.mu.Lock()
	b.open = false
	if b.fd4 >= 0 {
		unix.Close(b.fd4)
		b.fd4 = -1
	}
	b.mu.Unlock()
	if s6 := b.s6.Swap(nil); s6 != nil {
		s6.close()
	}
	b.relays.close()
	return b.inner.Close()
}

func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }

// Send writes through the shared socket, or through a TURN allocation for
// a peer whose path is relayed.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if re, ok := ep.(*Endpoint); ok {
		return re.send(bufs)
	}
	if dst := ep.DstIP(); dst.Is6() && !dst.Is4In6() {
		if s6 := b.s6.Load(); s6 != nil {
			return s6.send(bufs, netip.AddrPortFrom(dst, endpointAddr(ep).Port()))
		}
	}
	return b.inner.Send(bufs, ep)
}

// ParseEndpoint maps a relayed peer's address to its relay route, so that
// setting that endpoint over UAPI selects the relay.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if re := b.relays.lookup(ap); re != nil {
			return re, nil
		}
	}
	return b.inner.ParseEndpoint(s)
}

func (b *Bind) BatchSize() int { return b.inner.BatchSize() }

var errBindClosed = errors.New("bind closed")

// SendTo writes one datagram from the shared socket.
func (b *Bind) SendTo(p []byte, to netip.AddrPort) error {
	b.mu.RLock()
	open := b.open
	b.mu.RUnlock()
	if !open {
		return errBindClosed
	}
	ep := &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(to.Addr().Unmap(), to.Port())}
	return b.Send([][]byte{p}, ep)
}

package meshdns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/control"
)

// Bounds on what clients can make the resolver hold.
const (
	maxInflight     = 64 // UDP queries being answered; more are dropped (clients retry)
	maxTCPConns     = 16
	maxTCPQueries   = 32 // per connection
	tcpIdleTimeout  = 10 * time.Second
	forwardDeadline = maxUpstreams*upstreamTimeout + time.Second
)

// Config configures a Resolver.
type Config struct {
	// Listen is where the resolver answers, UDP and TCP (the agent's is
	// 100.100.100.100:53). Port 0 picks a free port for each, as tests
	// want: see UDPAddr and TCPAddr.
	Listen netip.AddrPort
	// Upstreams are the host's original resolvers. The listen address and
	// control.ResolverAddr are dropped: never forward to self.
	Upstreams []netip.AddrPort
	Logger    *slog.Logger
}

// Resolver answers DNS on one address. It serves only this host: a query
// whose source is not loopback, the listen address or the node's own
// overlay address (a LAN neighbour that routes to us, a peer through the
// tunnel) is dropped, so it is never an open resolver.
type Resolver struct {
	log   *slog.Logger
	udp   *net.UDPConn
	tcp   *net.TCPListener
	addr  netip.Addr
	self  atomic.Pointer[netip.Addr]
	names atomic.Pointer[table]
	fwd   forwarder

	inflight chan struct{}
	tcpSlots chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	refused  atomic.Uint64
	answered atomic.Uint64 // from the mesh's names
	fwded    atomic.Uint64 // sent upstream
}

// Listen starts a resolver. It answers for no names until SetNames.
func Listen(cfg Config) (*Resolver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ap := cfg.Listen
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("DNS resolver: listen on %s/udp: %w", ap, err)
	}
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("DNS resolver: listen on %s/tcp: %w", ap, err)
	}
	r := &Resolver{
		log:      cfg.Logger,
		udp:      udp,
		tcp:      tcp,
		addr:     ap.Addr(),
		inflight: make(chan struct{}, maxInflight),
		tcpSlots: make(chan struct{}, maxTCPConns),
	}
	r.fwd = forwarder{upstreams: filterUpstreams(cfg.Upstreams, ap), dial: (&net.Dialer{}).DialContext}
	r.names.Store(newTable(control.DefaultDNSDomain, nil))
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(2)
	go r.serveUDP()
	go r.serveTCP()
	return r, nil
}

func filterUpstreams(ups []netip.AddrPort, self netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, u := range ups {
		a := u.Addr().Unmap()
		if !a.IsValid() || a.IsUnspecified() || a == control.ResolverAddr || netip.AddrPortFrom(a, u.Port()) == self {
			continue
		}
		if len(out) < maxUpstreams {
			out = append(out, netip.AddrPortFrom(a, u.Port()))
		}
	}
	return out
}

// Upstreams are the resolvers queries outside the mesh go to.
func (r *Resolver) Upstreams() []netip.AddrPort { return r.fwd.upstreams }

// UDPAddr and TCPAddr are where the resolver listens.
func (r *Resolver) UDPAddr() netip.AddrPort { return r.udp.LocalAddr().(*net.UDPAddr).AddrPort() }
func (r *Resolver) TCPAddr() netip.AddrPort { return r.tcp.Addr().(*net.TCPAddr).AddrPort() }

// SetNames replaces the names the resolver answers for.
func (r *Resolver) SetNames(domain string, recs []Record) {
	r.names.Store(newTable(domain, recs))
}

// SetSelf tells the resolver this node's overlay address, a source it
// serves (the kernel may pick it for queries to the resolver).
func (r *Resolver) SetSelf(ip netip.Addr) { r.self.Store(&ip) }

// Refused counts queries dropped for their source.
func (r *Resolver) Refused() uint64 { return r.refused.Load() }

// Answered counts queries answered from the mesh's names, Forwarded those
// sent upstream.
func (r *Resolver) Answered() uint64  { return r.answered.Load() }
func (r *Resolver) Forwarded() uint64 { return r.fwded.Load() }

// Close stops the resolver and waits for its goroutines.
func (r *Resolver) Close() {
	r.cancel()
	r.udp.Close()
	r.tcp.Close()
	r.wg.Wait()
}

func (r *Resolver) allowed(src netip.Addr) bool {
	src = src.Unmap()
	if src.IsLoopback() || src == r.addr {
		return true
	}
	if s := r.self.Load(); s != nil && src == *s {
		return true
	}
	r.refused.Add(1)
	return false
}

func (r *Resolver) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, maxMsg)
	for {
		n, src, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !r.allowed(src.Addr()) {
			continue // no answer: nothing to reflect off us
		}
		select {
		case r.inflight <- struct{}{}:
		default:
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.inflight }()
			if resp := r.handle("udp", msg); resp != nil {
				r.udp.WriteToUDPAddrPort(resp, src)
			}
		}()
	}
}

func (r *Resolver) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		if !r.allowed(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()) {
			c.Close()
			continue
		}
		select {
		case r.tcpSlots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.tcpSlots }()
			r.serveConn(c)
		}()
	}
}

func (r *Resolver) serveConn(c *net.TCPConn) {
	defer c.Close()
	stop := context.AfterFunc(r.ctx, func() { c.Close() })
	defer stop()
	for range maxTCPQueries {
		c.SetDeadline(time.Now().Add(tcpIdleTimeout))
		msg, err := readTCPMsg(c)
		if err != nil {
			return
		}
		resp := r.handle("tcp", msg)
		if resp == nil {
			return
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// handle answers one request; nil means no answer at all.
func (r *Resolver) handle(network string, msg []byte) []byte {
	qr, err := parseQuery(msg)
	if errors.Is(err, errNotQuery) {
		return nil
	}
	var resp []byte
	switch {
	case err != nil:
		resp, err = errorReply(qr, dnsmessage.RCodeFormatError)
	case qr.hdr.OpCode != 0:
		resp, err = errorReply(qr, dnsmessage.RCodeNotImplemented)
	default:
		t := r.names.Load()
		if l := t.lookup(qr.q); l != nil && qr.q.Class == dnsmessage.ClassINET {
			r.answered.Add(1)
			resp, err = t.build(qr, l)
			break
		}
		r.fwded.Add(1)
		ctx, cancel := context.WithTimeout(r.ctx, forwardDeadline)
		resp, err = r.fwd.exchange(ctx, network, msg, qr)
		cancel()
		if err != nil {
			r.log.Debug("DNS forward failed", "err", err)
			resp, err = errorReply(qr, dnsmessage.RCodeServerFailure)
		}
	}
	if err != nil {
		r.log.Debug("DNS answer", "err", err)
		return nil
	}
	return resp
}

package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
)

// retransmit is how often an unanswered request is sent again. Every
// resend is a new transaction, so the first answer gives an exact
// round-trip time whichever copy it answers.
const retransmit = 250 * time.Millisecond

// errNoAnswer means no answer came in time.
var errNoAnswer = errors.New("no answer")

// prober runs STUN Binding exchanges over one UDP socket, so that every
// exchange leaves through the same NAT mapping.
type prober struct {
	conn *net.UDPConn

	mu      sync.Mutex
	waiting map[[stun.TransactionIDSize]byte]*pending
}

type pending struct {
	sent time.Time
	ch   chan<- answer
}

// answer is one STUN response.
type answer struct {
	msg  *stun.Message
	from netip.AddrPort
	rtt  time.Duration
}

// newProber opens a socket of network: "udp4", or "udp6" for the IPv6
// test (see ipv6.go).
func newProber(network string) (*prober, error) {
	conn, err := net.ListenUDP(network, &net.UDPAddr{})
	if err != nil {
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	p := &prober{conn: conn, waiting: map[[stun.TransactionIDSize]byte]*pending{}}
	go p.readLoop()
	return p, nil
}

func (p *prober) close() { p.conn.Close() }

// localPort is the socket's port, which a host without NAT sees mapped
// unchanged.
func (p *prober) localPort() uint16 {
	return uint16(p.conn.LocalAddr().(*net.UDPAddr).Port)
}

// readLoop hands each STUN response to the exchange waiting for it and
// drops everything else, until the socket is closed.
func (p *prober) readLoop() {
	buf := make([]byte, 1500)
	for errs := 0; ; {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			// An ICMP error from one server must not end the others' tests;
			// a socket that only fails ends the loop.
			if errs++; errors.Is(err, net.ErrClosed) || errs > 100 {
				return
			}
			continue
		}
		errs = 0
		now := time.Now()
		msg := new(stun.Message)
		if err := stun.Decode(append([]byte(nil), buf[:n]...), msg); err != nil {
			continue
		}
		p.mu.Lock()
		w := p.waiting[msg.TransactionID]
		p.mu.Unlock()
		if w == nil {
			continue // late answer to a finished exchange
		}
		select {
		case w.ch <- answer{msg: msg, from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), rtt: now.Sub(w.sent)}:
		default: // the exchange already has its answer
		}
	}
}

// exchange sends Binding requests to dest, with a CHANGE-REQUEST when
// change is not zero, until one is answered or timeout passes.
func (p *prober) exchange(ctx context.Context, dest netip.AddrPort, change byte, timeout time.Duration) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ch := make(chan answer, 1)
	var ids [][stun.TransactionIDSize]byte
	defer func() {
		p.mu.Lock()
		for _, id := range ids {
			delete(p.waiting, id)
		}
		p.mu.Unlock()
	}()
	tick := time.NewTicker(retransmit)
	defer tick.Stop()
	for {
		setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
		if change != 0 {
			setters = append(setters, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, change}})
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			return answer{}, fmt.Errorf("build STUN request: %w", err)
		}
		p.mu.Lock()
		p.waiting[req.TransactionID] = &pending{sent: time.Now(), ch: ch}
		ids = append(ids, req.TransactionID)
		p.mu.Unlock()
		if _, err := p.conn.WriteToUDPAddrPort(req.Raw, dest); err != nil {
			return answer{}, fmt.Errorf("send to %s: %w", dest, err)
		}
		select {
		case a := <-ch:
			return a, nil
		case <-ctx.Done():
			return answer{}, errNoAnswer
		case <-tick.C:
		}
	}
}

// mapped is the public address a Binding success response reports.
func (a answer) mapped() (netip.AddrPort, error) {
	if a.msg.Type.Class == stun.ClassErrorResponse {
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(a.msg); err != nil {
			return netip.AddrPort{}, errors.New("STUN error response without a code")
		}
		return netip.AddrPort{}, fmt.Errorf("STUN error %d %s", code.Code, code.Reason)
	}
	if a.msg.Type != stun.BindingSuccess {
		return netip.AddrPort{}, fmt.Errorf("unexpected STUN message %v", a.msg.Type)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(a.msg); err == nil {
		return addrPort(xor.IP, xor.Port)
	}
	var plain stun.MappedAddress
	if err := plain.GetFrom(a.msg); err == nil {
		return addrPort(plain.IP, plain.Port)
	}
	return netip.AddrPort{}, errors.New("STUN answer without a mapped address")
}

// otherAddress is the RFC 5780 OTHER-ADDRESS of a response, if any.
func (a answer) otherAddress() (netip.AddrPort, bool) {
	var other stun.OtherAddress
	if err := other.GetFrom(a.msg); err != nil {
		return netip.AddrPort{}, false
	}
	ap, err := addrPort(other.IP, other.Port)
	if err != nil || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return ap, true
}

func addrPort(ip net.IP, port int) (netip.AddrPort, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("bad address %v:%d in STUN answer", ip, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// Flags of CHANGE-REQUEST, as one byte.
const (
	changeIP   = byte(control.STUNChangeIP)
	changePort = byte(control.STUNChangePort)
)

package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/sockbuf"
	"github.com/meshvpn/meshvpn/relay"
)

// stunServer answers STUN Binding requests, telling each client the address
// its packets arrive from (an agent's server-reflexive ICE candidate).
//
// With an alternate address it also follows RFC 5780: it listens on every
// combination of its IPs and ports (primary and alternate) and answers a
// CHANGE-REQUEST from the combination asked for. A reply from an address
// the client never sent to is what tells full, restricted and
// port-restricted cone NATs apart in `meshvpn netcheck`.
type stunServer struct {
	// socks[0] is the primary socket; with an alternate there is one socket
	// per (ip, port) pair.
	socks []*stunSocket
	// ips and ports are how many distinct IPs and ports there are (1 or 2).
	ips, ports int
	// hasAlt is set when an alternate address was bound.
	hasAlt bool
	log    *slog.Logger
	// requests counts answered requests; nil in tests that do not care.
	requests *metrics.Vec
	// limit bounds the answers one source address gets: a Binding response
	// is three times its request, a reflection at a spoofed source.
	limit *relay.SourceLimiter
}

// stunSocket is one bound address of the server; ip and port index the
// server's IPs and ports (0 primary, 1 alternate). An extra socket (another
// address of --stun-listen, e.g. the IPv6 one) has -1 for both: it
// answers plain Binding requests only.
type stunSocket struct {
	conn     net.PacketConn
	ip, port int
	// turn, when set, takes every datagram that is not a Binding request
	// (the embedded TURN server shares the primary socket).
	turn *relay.SharedConn
}

// listenSTUN binds the primary address and, when alternate is not empty,
// the alternate and the cross combinations (primary IP with alternate port
// and the reverse).
func listenSTUN(primary, alternate string, log *slog.Logger) (*stunServer, error) {
	s := &stunServer{ips: 1, ports: 1, log: log, limit: relay.NewSourceLimiter(relay.AnswerBurst, relay.AnswerPerSec)}
	first, err := s.bind(primary, 0, 0)
	if err != nil {
		return nil, err
	}
	if alternate == "" {
		return s, nil
	}
	pa := first.conn.LocalAddr().(*net.UDPAddr)
	aa, err := net.ResolveUDPAddr("udp", alternate)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("stun alternate address %q: %w", alternate, err)
	}
	// An alternate without an IP means the primary's IP, another port.
	if aa.IP == nil || aa.IP.IsUnspecified() && pa.IP.IsUnspecified() {
		aa.IP = pa.IP
	}
	if err := checkAlternate(pa, aa); err != nil {
		s.close()
		return nil, err
	}
	ipIdx := 0
	if !aa.IP.Equal(pa.IP) {
		ipIdx = 1
	}
	// Port 0 (tests) picks a port; it counts as "another port" once bound.
	alt, err := s.bind(net.JoinHostPort(ipString(aa.IP), fmt.Sprint(aa.Port)), ipIdx, -1)
	if err != nil {
		s.close()
		return nil, err
	}
	altPort := alt.conn.LocalAddr().(*net.UDPAddr).Port
	if altPort == pa.Port && ipIdx == 0 {
		s.close()
		return nil, fmt.Errorf("stun alternate address %s is the primary address", alternate)
	}
	alt.port = 0
	if altPort != pa.Port {
		alt.port = 1
		s.ports = 2
	}
	s.ips = ipIdx + 1
	s.hasAlt = true
	// The cross combinations, so each flag of CHANGE-REQUEST works alone.
	if s.ips == 2 && s.ports == 2 {
		for _, c := range []struct {
			ip   net.IP
			port int
			i, p int
		}{{pa.IP, altPort, 0, 1}, {aa.IP, pa.Port, 1, 0}} {
			if _, err := s.bind(net.JoinHostPort(ipString(c.ip), fmt.Sprint(c.port)), c.i, c.p); err != nil {
				s.close()
				return nil, err
			}
		}
	}
	return s, nil
}

// checkAlternate refuses alternates that cannot give a reply from another
// address than the client sent to.
func checkAlternate(primary, alt *net.UDPAddr) error {
	if alt.IP.Equal(primary.IP) {
		return nil
	}
	if primary.IP.IsUnspecified() || alt.IP.IsUnspecified() {
		// A wildcard socket replies from whatever address routing picks, so
		// "the other IP" would mean nothing.
		return fmt.Errorf("stun alternate address %s has another IP than the primary %s: then both need a specific IP", alt, primary)
	}
	if (primary.IP.To4() == nil) != (alt.IP.To4() == nil) {
		return fmt.Errorf("stun alternate address %s and primary %s are of different IP versions", alt, primary)
	}
	return nil
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// bind opens one socket and records it under the given indexes.
func (s *stunServer) bind(addr string, ip, port int) (*stunSocket, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen stun %s: %w", addr, err)
	}
	sockbuf.Grow(conn) // the embedded TURN server may share it
	k := &stunSocket{conn: conn, ip: ip, port: port}
	s.socks = append(s.socks, k)
	return k, nil
}

// sock returns the socket with the given indexes, nil if there is none.
func (s *stunServer) sock(ip, port int) *stunSocket {
	for _, k := range s.socks {
		if k.ip == ip && k.port == port {
			return k
		}
	}
	return nil
}

// primaryAddr and alternateAddr are the bound addresses; alternateAddr is
// nil without an alternate.
func (s *stunServer) primaryAddr() *net.UDPAddr {
	return s.socks[0].conn.LocalAddr().(*net.UDPAddr)
}

func (s *stunServer) alternateAddr() *net.UDPAddr {
	if !s.hasAlt {
		return nil
	}
	return s.sock(s.ips-1, s.ports-1).conn.LocalAddr().(*net.UDPAddr)
}

// shareWithTURN hands the primary socket's non-STUN traffic to a TURN server.
func (s *stunServer) shareWithTURN() *relay.SharedConn {
	c := relay.NewSharedConn(s.socks[0].conn)
	s.socks[0].turn = c
	return c
}

// port is the primary UDP port.
func (s *stunServer) port() int { return s.primaryAddr().Port }

// serve answers requests on every socket until they are closed; it returns
// the first read error other than the close.
func (s *stunServer) serve() error {
	errc := make(chan error, len(s.socks))
	for _, k := range s.socks {
		go func() { errc <- s.serveSocket(k) }()
	}
	for range s.socks {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

func (s *stunServer) serveSocket(k *stunSocket) error {
	read := socketReader(k)
	for {
		pkt, from, err := read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("stun read: %w", err)
		}
		if k.turn != nil && k.turn.Relay(pkt, from) {
			continue
		}
		resp, via, ok := s.answer(pkt, from, k)
		if !ok {
			if k.turn != nil {
				k.turn.Deliver(pkt, from)
			}
			continue
		}
		if !s.limit.AllowAddr(from, time.Now()) {
			continue
		}
		if s.requests != nil {
			s.requests.Inc()
		}
		if _, err := via.conn.WriteTo(resp, from); err != nil {
			s.log.Debug("stun write", "to", from, "err", err)
		}
	}
}

// socketReader reads k's datagrams: in batches on a socket shared with
// TURN (relayed ChannelData is most of its traffic), flushing the fast
// path's queue before each batch; one by one otherwise.
func socketReader(k *stunSocket) func() ([]byte, net.Addr, error) {
	if uc, ok := k.conn.(*net.UDPConn); ok && k.turn != nil {
		rd := relay.NewBatchReader(uc)
		return func() ([]byte, net.Addr, error) { return rd.Read(k.turn.Flush) }
	}
	buf := make([]byte, 1500)
	return func() ([]byte, net.Addr, error) {
		n, from, err := k.conn.ReadFrom(buf)
		return buf[:n], from, err
	}
}

func (s *stunServer) close() error {
	var errs []error
	for _, k := range s.socks {
		errs = append(errs, k.conn.Close())
	}
	return errors.Join(errs...)
}

// answer builds the reply to a packet that arrived on socket on, and picks
// the socket to send it from. Anything but a Binding request (garbage,
// responses, other methods) gets no answer: answering only requests means
// we can never be made to loop with another server.
func (s *stunServer) answer(pkt []byte, from net.Addr, on *stunSocket) ([]byte, *stunSocket, bool) {
	if !stun.IsMessage(pkt) {
		return nil, nil, false
	}
	var req stun.Message
	if err := stun.Decode(pkt, &req); err != nil {
		return nil, nil, false
	}
	if req.Type != stun.BindingRequest {
		return nil, nil, false
	}
	udp, ok := from.(*net.UDPAddr)
	if !ok {
		return nil, nil, false
	}
	via := on
	if raw, err := req.Get(stun.AttrChangeRequest); err == nil {
		if len(raw) != 4 {
			return s.errorResponse(&req, stun.CodeBadRequest, on)
		}
		if on.ip < 0 {
			return s.errorResponse(&req, stun.CodeUnknownAttribute, on)
		}
		ip, port := on.ip, on.port
		if raw[3]&control.STUNChangeIP != 0 {
			ip = 1 - ip
		}
		if raw[3]&control.STUNChangePort != 0 {
			port = 1 - port
		}
		// RFC 5780 section 6.1: a change this server cannot make is
		// answered with 420, as if it did not know the attribute.
		if via = s.sock(ip, port); via == nil {
			return s.errorResponse(&req, stun.CodeUnknownAttribute, on)
		}
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: udp.IP, Port: udp.Port},
	}
	setters = append(setters, s.rfc5780Attrs(on, via)...)
	setters = append(setters, stun.Fingerprint)
	resp, err := stun.Build(setters...)
	if err != nil {
		return nil, nil, false
	}
	return resp.Raw, via, true
}

// rfc5780Attrs are RESPONSE-ORIGIN and OTHER-ADDRESS, given only when the
// server has all four addresses with specific IPs: a wildcard address would
// tell the client nothing it could use.
func (s *stunServer) rfc5780Attrs(on, via *stunSocket) []stun.Setter {
	if s.ips != 2 || s.ports != 2 || on.ip < 0 {
		return nil
	}
	origin := via.conn.LocalAddr().(*net.UDPAddr)
	other := s.sock(1-on.ip, 1-on.port).conn.LocalAddr().(*net.UDPAddr)
	return []stun.Setter{
		&stun.ResponseOrigin{IP: origin.IP, Port: origin.Port},
		&stun.OtherAddress{IP: other.IP, Port: other.Port},
	}
}

func (s *stunServer) errorResponse(req *stun.Message, code stun.ErrorCode, on *stunSocket) ([]byte, *stunSocket, bool) {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodBinding, stun.ClassErrorResponse),
		code,
	}
	if code == stun.CodeUnknownAttribute {
		setters = append(setters, &stun.UnknownAttributes{stun.AttrChangeRequest})
	}
	setters = append(setters, stun.Fingerprint)
	resp, err := stun.Build(setters...)
	if err != nil {
		return nil, nil, false
	}
	return resp.Raw, on, true
}

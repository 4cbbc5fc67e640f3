package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/internal/metrics"
)

// stunServer answers STUN Binding requests, telling each agent the address
// its packets arrive from (its server-reflexive ICE candidate).
type stunServer struct {
	conn net.PacketConn
	log  *slog.Logger
	// requests counts answered requests; nil in tests that do not care.
	requests *metrics.Vec
}

func listenSTUN(addr string, log *slog.Logger) (*stunServer, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen stun %s: %w", addr, err)
	}
	return &stunServer{conn: conn, log: log}, nil
}

// port is the UDP port the server is bound to.
func (s *stunServer) port() int {
	if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok {
		return a.Port
	}
	return 0
}

// serve answers requests until the socket is closed.
func (s *stunServer) serve() error {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("stun read: %w", err)
		}
		resp, ok := bindingResponse(buf[:n], from)
		if !ok {
			continue
		}
		if s.requests != nil {
			s.requests.Inc()
		}
		if _, err := s.conn.WriteTo(resp, from); err != nil {
			s.log.Debug("stun write", "to", from, "err", err)
		}
	}
}

func (s *stunServer) close() error { return s.conn.Close() }

// bindingResponse builds the answer to a Binding request from addr. Anything
// else (garbage, responses, other methods) gets no answer: answering only
// requests means we can never be made to loop with another server.
func bindingResponse(pkt []byte, from net.Addr) ([]byte, bool) {
	if !stun.IsMessage(pkt) {
		return nil, false
	}
	var req stun.Message
	if err := stun.Decode(pkt, &req); err != nil {
		return nil, false
	}
	if req.Type != stun.BindingRequest {
		return nil, false
	}
	udp, ok := from.(*net.UDPAddr)
	if !ok {
		return nil, false
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: udp.IP, Port: udp.Port},
		stun.Fingerprint,
	)
	if err != nil {
		return nil, false
	}
	return resp.Raw, true
}

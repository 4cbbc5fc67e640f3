package stunserver

import (
	"net"
	"strings"

	"github.com/meshvpn/meshvpn/relay"
)

// SplitListen splits a comma-separated STUN listen list into the primary
// (the address the RFC 5780 alternate goes with) and the others.
func SplitListen(list string) (string, []string) {
	var addrs []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return "", nil
	}
	return addrs[0], addrs[1:]
}

// ShareExtrasWithTURN hands the non-STUN traffic of every extra socket on
// the primary's port to the TURN server, as ShareWithTURN the primary's:
// TURN on the STUN port then answers on the IPv6 address too.
func (s *Server) ShareExtrasWithTURN() []net.PacketConn {
	var out []net.PacketConn
	for _, k := range s.socks {
		if k.ip < 0 && k.conn.LocalAddr().(*net.UDPAddr).Port == s.Port() {
			k.turn = relay.NewSharedConn(k.conn)
			out = append(out, k.turn)
		}
	}
	return out
}

// BindExtra binds each of addrs as an extra socket: plain Binding answers
// only (a dual-stack deployment whose primary and alternate have specific
// IPv4 addresses adds its IPv6 address here).
func (s *Server) BindExtra(addrs []string) error {
	for _, a := range addrs {
		if _, err := s.bind(a, -1, -1); err != nil {
			return err
		}
	}
	return nil
}

// ExtraAddrs are the bound addresses of the extra sockets.
func (s *Server) ExtraAddrs() []*net.UDPAddr {
	var out []*net.UDPAddr
	for _, k := range s.socks {
		if k.ip < 0 {
			out = append(out, k.conn.LocalAddr().(*net.UDPAddr))
		}
	}
	return out
}

// Conns are every socket of the server, primary first; SharedConns those
// whose non-STUN traffic goes to the TURN server. The coordinator reads
// their addresses (which take IPv6); it must not read from or close them.
func (s *Server) Conns() []net.PacketConn {
	var out []net.PacketConn
	for _, k := range s.socks {
		out = append(out, k.conn)
	}
	return out
}

func (s *Server) SharedConns() []net.PacketConn {
	var out []net.PacketConn
	for _, k := range s.socks {
		if k.turn != nil {
			out = append(out, k.conn)
		}
	}
	return out
}

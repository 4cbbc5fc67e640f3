package coordinator

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/meshvpn/meshvpn/control"
)

// IPv6 STUN. The STUN socket bound to ":PORT" (the default) already takes
// both families: Go opens it as [::]:PORT with IPV6_V6ONLY off, and a
// Binding answer carries the client's address in its own family (an IPv4
// client's v4-mapped source goes out as a plain IPv4 XOR-MAPPED-ADDRESS).
// What IPv6 needs beyond that is an address to tell clients: the host they
// used to reach the API names one family only, so Config.PublicIPv6 names
// the IPv6 one.

// checkPublicIPv6 accepts an empty string or a global IPv6 address.
func checkPublicIPv6(s string) error {
	if s == "" {
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("public IPv6 %q: want an IPv6 address without port or zone, e.g. 2001:db8::10", s)
	}
	if a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() {
		return fmt.Errorf("public IPv6 %s: want an address clients can reach (not unspecified, link-local or multicast)", a)
	}
	return nil
}

// stunServers6 is the IPv6 STUN server list (Netmap.STUN6), empty without
// a public IPv6 address or a STUN socket that takes IPv6.
func (s *Server) stunServers6() []string {
	if s.cfg.PublicIPv6 == "" {
		return nil
	}
	port := 0
	switch {
	case s.turnServesSTUN():
		port = port6(s.turn.UDPConn())
	case s.stun != nil:
		for _, c := range s.stun.Conns() {
			if port = port6(c); port != 0 {
				break
			}
		}
	}
	if port == 0 {
		return nil
	}
	return []string{net.JoinHostPort(s.cfg.PublicIPv6, strconv.Itoa(port))}
}

// port6 is c's port when c takes IPv6 (bound to an IPv6 address or to the
// dual-stack wildcard [::]), else 0.
func port6(c net.PacketConn) int {
	a, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || a.IP.To4() != nil {
		return 0
	}
	return a.Port
}

// stunServerList6 is stunServers6 for NetcheckInfo.STUN6.
func (s *Server) stunServerList6() []control.STUNServer {
	var out []control.STUNServer
	for _, a := range s.stunServers6() {
		out = append(out, control.STUNServer{Addr: a})
	}
	return out
}

// turnUDP6Port is the port the embedded relay answers UDP on over IPv6:
// its own socket's when that takes IPv6, else that of an extra STUN
// socket it shares; 0 for none.
func (s *Server) turnUDP6Port() int {
	if s.turn == nil {
		return 0
	}
	if p := port6(s.turn.UDPConn()); p != 0 {
		return p
	}
	if s.stun != nil {
		for _, c := range s.stun.SharedConns() {
			if p := port6(c); p != 0 {
				return p
			}
		}
	}
	return 0
}

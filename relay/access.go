package relay

import (
	"net"
	"net/netip"
)

// UDPConn is the server's client-facing UDP socket.
func (t *Server) UDPConn() net.PacketConn { return t.udp }

// UDPPort is the port clients reach the server on, over UDP and TCP.
func (t *Server) UDPPort() int { return t.udpPort }

// TLSAddr is the turns: listener's address, nil without one.
func (t *Server) TLSAddr() net.Addr {
	if t.tls == nil {
		return nil
	}
	return t.tls.Addr()
}

// TLSPort is the turns: port, 0 without one.
func (t *Server) TLSPort() int { return t.tlsPort }

// RelayIP is the address allocations are advertised with.
func (t *Server) RelayIP() netip.Addr { return t.relayIP }

// Usage is the ledger the server counts relayed traffic in.
func (t *Server) Usage() *Ledger { return t.allocs.usage }

// AllocationCount is how many allocations pion holds.
func (t *Server) AllocationCount() int { return t.srv.AllocationCount() }

// NodeAllocations is how many allocations node holds.
func (t *Server) NodeAllocations(node uint64) int { return t.allocs.count(node) }

// FastChannels is how many channels the fast path relays.
func (t *Server) FastChannels() int { return t.fast.channels() }

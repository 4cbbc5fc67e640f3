package relay

import (
	"encoding/binary"
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// watchConn is the embedded TURN server's UDP socket as pion sees it. On
// the way out it reads the grants pion makes (Allocate and Refresh success
// responses, already authenticated) into the allocation table, which is how
// the table learns the lifetime pion granted and each refresh. On the way
// in it drops unauthenticated requests over the source's budget: those are
// answered (a Binding response, a 401 challenge) with more bytes than they
// carry, so they could be reflected at a spoofed victim.
type watchConn struct {
	net.PacketConn
	allocs *relayAllocs
	limit  *SourceLimiter
	// side and rd, when set (a socket of its own, not shared with STUN),
	// read in batches and relay ChannelData of bound channels there
	// (relayfast.go).
	side *clientSide
	rd   *BatchReader
}

// STUN message types (RFC 5389 section 6) the watch looks for.
const (
	typeAllocateSuccess = 0x0103
	typeRefreshSuccess  = 0x0104
	stunHeaderLen       = 20
	stunMagicCookie     = 0x2112A442
)

func (c *watchConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if len(p) >= stunHeaderLen && p[0] == 0x01 && (p[1] == 0x03 || p[1] == 0x04) {
		c.observe(p, to, time.Now())
	}
	return c.PacketConn.WriteTo(p, to)
}

// observe records a grant in the table.
func (c *watchConn) observe(p []byte, to net.Addr, now time.Time) {
	if binary.BigEndian.Uint32(p[4:8]) != stunMagicCookie {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil {
		return
	}
	raw, err := m.Get(stun.AttrLifetime)
	if err != nil || len(raw) != 4 {
		return
	}
	lifetime := time.Duration(binary.BigEndian.Uint32(raw)) * time.Second
	switch binary.BigEndian.Uint16(p[0:2]) {
	case typeAllocateSuccess:
		var relayed stun.XORMappedAddress
		if relayed.GetFromAs(m, stun.AttrXORRelayedAddress) == nil {
			c.allocs.granted(relayed.Port, to.String(), lifetime, now)
		}
	case typeRefreshSuccess:
		c.allocs.refreshed(to.String(), lifetime, now)
	}
}

func (c *watchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.read(p)
		if err != nil || !unauthenticatedRequest(p[:n]) || c.limit.AllowAddr(from, time.Now()) {
			return n, from, err
		}
	}
}

// read is the next datagram not taken by the fast path.
func (c *watchConn) read(p []byte) (int, net.Addr, error) {
	if c.rd == nil {
		return c.PacketConn.ReadFrom(p)
	}
	for {
		pkt, from, err := c.rd.Read(c.side.flush)
		if err != nil {
			return 0, from, err
		}
		if !c.side.relay(pkt, from) {
			return copy(p, pkt), from, nil
		}
	}
}

// unauthenticatedRequest tells whether pkt is a STUN request without
// MESSAGE-INTEGRITY: a Binding request, or the first try of an Allocate.
// ChannelData and indications are not answered and pass untouched.
func unauthenticatedRequest(pkt []byte) bool {
	if len(pkt) < stunHeaderLen || pkt[0]&0xC0 != 0 || binary.BigEndian.Uint32(pkt[4:8]) != stunMagicCookie {
		return false
	}
	// The class bits are 0x0110 of the type; 00 is a request.
	if binary.BigEndian.Uint16(pkt[0:2])&0x0110 != 0 {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), pkt...)}
	if m.Decode() != nil {
		return false // pion drops it without an answer
	}
	return !m.Contains(stun.AttrMessageIntegrity)
}

package datapath

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Low-TTL opening packets. Where the peer's router would take our first
// packet as a flow to itself (a router without an input firewall), a
// packet that passes our own NAT but dies before it reaches the peer's
// router opens our NAT toward the peer and leaves nothing behind there
// (LAB-NOTES.md, "A routing hop between NATs"). It must leave from the
// shared socket, whose mapping the opening is for: wireguard-go's bind
// does not expose its socket, so we find it by its port and keep a
// duplicate descriptor to send with a per-packet IP_TTL.

// findUDP4Socket returns a duplicate of this process's IPv4 UDP socket
// bound to port.
func findUDP4Socket(port uint16) (int, error) {
	return findUDPSocket(port, unix.AF_INET) // bind6.go
}

// ttlControl is the control message that sets one datagram's TTL.
func ttlControl(ttl int) []byte {
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.IPPROTO_IP
	h.Type = unix.IP_TTL
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], uint32(ttl))
	return oob
}

// SendOpening sends payload with the given TTL from the shared socket to
// an IPv4 address.
func (b *Bind) SendOpening(to netip.AddrPort, ttl int, payload []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.open || b.fd4 < 0 {
		return errBindClosed
	}
	if !to.Addr().Unmap().Is4() {
		return errors.New("low-TTL opening is IPv4 only")
	}
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().Unmap().As4()}
	return unix.Sendmsg(b.fd4, payload, ttlControl(ttl), sa, 0)
}

package agent

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
)

// probeOpenTTL finds the TTL of a low-TTL opening packet: the smallest TTL
// at which a packet toward the STUN server dies at a router with a public
// address, that is one past every NAT of ours (a home router, a carrier
// NAT) but before the wider internet where a peer's router could sit. It
// sends one Binding request per TTL from a fresh socket and reads the
// routers' ICMP time-exceeded messages (IP_RECVERR). 0 means no such TTL:
// the server answered first (our NAT sits right next to the internet, as
// on a flat lab bridge) or nobody told.
func probeOpenTTL(server netip.AddrPort) int {
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	if !server.Addr().Is4() {
		return 0
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1) != nil {
		return 0
	}
	to := &unix.SockaddrInet4{Port: int(server.Port()), Addr: server.Addr().As4()}
	for ttl := 1; ttl <= openTTLMax; ttl++ {
		if unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttl) != nil {
			return 0
		}
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if unix.Sendto(fd, req.Raw, 0, to) != nil {
			return 0
		}
		switch offender, answered := awaitHop(fd); {
		case answered:
			return 0
		case offender.IsValid() && publicHop(offender):
			return ttl
		}
	}
	return 0
}

const (
	// openTTLMax: home router, carrier NAT, and one more.
	openTTLMax = 4
	// hopWait bounds the wait for one TTL's answer or ICMP message.
	hopWait = 300 * time.Millisecond
)

// awaitHop waits for the server's answer or a router's ICMP error on fd.
func awaitHop(fd int) (offender netip.Addr, answered bool) {
	buf := make([]byte, 1500)
	oob := make([]byte, 512)
	deadline := time.Now().Add(hopWait)
	for time.Now().Before(deadline) {
		if _, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE); err == nil {
			if a, ok := icmpOffender(oob[:oobn]); ok {
				return a, false
			}
		}
		if n, _, err := unix.Recvfrom(fd, buf, 0); err == nil && stun.IsMessage(buf[:n]) {
			return netip.Addr{}, true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return netip.Addr{}, false
}

// icmpOffender reads the router that sent an ICMP time-exceeded from an
// IP_RECVERR control message (struct sock_extended_err, then the
// offender's sockaddr_in).
func icmpOffender(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.IPPROTO_IP || m.Header.Type != unix.IP_RECVERR {
			continue
		}
		const eeSize = int(unsafe.Sizeof(unix.SockExtendedErr{}))
		if len(m.Data) < eeSize+8 {
			continue
		}
		ee := (*unix.SockExtendedErr)(unsafe.Pointer(&m.Data[0]))
		if ee.Origin != unix.SO_EE_ORIGIN_ICMP || ee.Type != 11 { // time exceeded
			continue
		}
		sa := m.Data[eeSize:]
		if binary.NativeEndian.Uint16(sa) != unix.AF_INET {
			continue
		}
		return netip.AddrFrom4([4]byte(sa[4:8])), true
	}
	return netip.Addr{}, false
}

// probeOpenTTLTo resolves a STUN server ("host:port") and probes toward it.
func probeOpenTTLTo(server string) int {
	ua, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return 0
	}
	return probeOpenTTL(ua.AddrPort())
}

// carrierNAT is RFC 6598 shared address space, inside carrier NATs.
var carrierNAT = netip.MustParsePrefix("100.64.0.0/10")

// publicHop tells whether a router's address is on the internet side of
// every NAT: not private, not a carrier NAT's inside, not link-local.
func publicHop(a netip.Addr) bool {
	return !a.IsPrivate() && !carrierNAT.Contains(a) && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsUnspecified()
}

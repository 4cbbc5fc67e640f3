package agent

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvErr builds an IP_RECVERR control message as the kernel does: a
// sock_extended_err, then the offender's sockaddr_in.
func recvErr(origin, typ uint8, from netip.Addr) []byte {
	ee := unix.SockExtendedErr{Errno: uint32(unix.EHOSTUNREACH), Origin: origin, Type: typ}
	data := make([]byte, int(unsafe.Sizeof(ee))+16)
	copy(data, unsafe.Slice((*byte)(unsafe.Pointer(&ee)), unsafe.Sizeof(ee)))
	sa := data[unsafe.Sizeof(ee):]
	binary.NativeEndian.PutUint16(sa, unix.AF_INET)
	a4 := from.As4()
	copy(sa[4:8], a4[:])
	oob := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_RECVERR
	h.SetLen(unix.CmsgLen(len(data)))
	copy(oob[unix.CmsgLen(0):], data)
	return oob
}

func TestICMPOffender(t *testing.T) {
	hop := netip.MustParseAddr("198.18.3.1")
	if a, ok := icmpOffender(recvErr(unix.SO_EE_ORIGIN_ICMP, 11, hop)); !ok || a != hop {
		t.Errorf("time exceeded from %v: got %v %v", hop, a, ok)
	}
	if _, ok := icmpOffender(recvErr(unix.SO_EE_ORIGIN_ICMP, 3, hop)); ok {
		t.Error("a destination-unreachable error was taken for time exceeded")
	}
	if _, ok := icmpOffender(recvErr(unix.SO_EE_ORIGIN_LOCAL, 11, hop)); ok {
		t.Error("a local error was taken for an ICMP one")
	}
}

func TestPublicHop(t *testing.T) {
	for addr, want := range map[string]bool{
		"10.3.0.1":     false,
		"172.16.3.1":   false,
		"192.168.1.1":  false,
		"100.64.0.1":   false, // a carrier NAT's inside
		"169.254.1.1":  false,
		"198.18.3.1":   true,
		"203.0.113.50": true,
	} {
		if got := publicHop(netip.MustParseAddr(addr)); got != want {
			t.Errorf("publicHop(%s) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzICMPOffender: whatever the control message holds, no panic.
func FuzzICMPOffender(f *testing.F) {
	f.Add(recvErr(unix.SO_EE_ORIGIN_ICMP, 11, netip.MustParseAddr("198.18.3.1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		icmpOffender(oob)
	})
}

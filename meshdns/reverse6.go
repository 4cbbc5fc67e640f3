package meshdns

import (
	"net/netip"
	"strings"
)

// reverseName reads a reverse name, in-addr.arpa or ip6.arpa.
func reverseName(name string) (netip.Addr, bool) {
	if ip, ok := reverseIPv4(name); ok {
		return ip, true
	}
	return reverseIPv6(name)
}

// reverseIPv6 reads the 32 nibbles of "b.a.9.8. … .d.f.ip6.arpa" (least
// significant first) as an IPv6 address.
func reverseIPv6(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".ip6.arpa")
	if !ok || len(rest) != 63 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i := range 32 {
		if i > 0 && rest[2*i-1] != '.' {
			return netip.Addr{}, false
		}
		c := rest[2*i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			return netip.Addr{}, false
		}
		// Nibble i counts from the address's last one.
		pos := 31 - i
		if pos%2 == 0 {
			b[pos/2] |= v << 4
		} else {
			b[pos/2] |= v
		}
	}
	return netip.AddrFrom16(b), true
}

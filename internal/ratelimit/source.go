package ratelimit

import (
	"net"
	"net/netip"
)

// SourceKey is what per-address limits key on: the IPv4 address, or the
// /64 of an IPv6 address (one subscriber usually holds a whole /64, so
// keying on the full address would give it 2^64 budgets). IPv4-mapped IPv6
// addresses count as IPv4. addr is an IP or an "ip:port"; anything else is
// returned as is.
func SourceKey(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}

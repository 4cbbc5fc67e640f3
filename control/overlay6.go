package control

import (
	"crypto/rand"
	"fmt"
	"net/netip"
)

// ULARange is RFC 4193's locally assigned half of fc00::/7: every mesh's
// IPv6 overlay prefix is a /48 in it.
var ULARange = netip.MustParsePrefix("fd00::/8")

// ULABits is the length of a mesh's IPv6 overlay prefix.
const ULABits = 48

// NewULAPrefix draws a mesh's IPv6 overlay prefix: fd00::/8 and a 40-bit
// random Global ID (RFC 4193 §3.2), so that two meshes (or a mesh and a
// site's own ULA) almost never overlap.
func NewULAPrefix() (netip.Prefix, error) {
	var b [16]byte
	b[0] = 0xfd
	if _, err := rand.Read(b[1:6]); err != nil {
		return netip.Prefix{}, fmt.Errorf("random ULA prefix: %w", err)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), ULABits), nil
}

// ValidULAPrefix tells whether p can be a mesh's IPv6 overlay prefix.
func ValidULAPrefix(p netip.Prefix) bool {
	return p.IsValid() && p.Bits() == ULABits && p.Addr().Is6() && !p.Addr().Is4In6() &&
		ULARange.Contains(p.Addr()) && p.Masked() == p
}

// OverlayAddr6 is the IPv6 overlay address of the node whose IPv4 overlay
// address is ip4: the mesh's /48, subnet 0, and ip4 as the low 32 bits
// (fdxx:xxxx:xxxx::6440:5 for 100.64.0.5). Derived, not allocated, it is
// exactly as unique and as stable as the IPv4 address: a node keeps it
// across restarts and re-registration, and a held-back IPv4 address holds
// back its IPv6 twin. It returns the zero Addr for bad input.
func OverlayAddr6(prefix netip.Prefix, ip4 netip.Addr) netip.Addr {
	if !ValidULAPrefix(prefix) || !ip4.Is4() {
		return netip.Addr{}
	}
	b := prefix.Addr().As16()
	v4 := ip4.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

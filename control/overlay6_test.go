package control

import (
	"net/netip"
	"testing"
)

func TestOverlayAddr6(t *testing.T) {
	p := netip.MustParsePrefix("fd12:3456:789a::/48")
	if got := OverlayAddr6(p, netip.MustParseAddr("100.64.0.5")); got != netip.MustParseAddr("fd12:3456:789a::6440:5") {
		t.Fatalf("OverlayAddr6 = %v", got)
	}
	for _, bad := range []string{"fc00::/48", "fd12:3456:789a::/64", "fd12:3456:789a:1::/48", "100.64.0.0/10"} {
		if OverlayAddr6(netip.MustParsePrefix(bad), netip.MustParseAddr("100.64.0.5")).IsValid() {
			t.Errorf("OverlayAddr6 accepted prefix %s", bad)
		}
	}
	seen := map[netip.Prefix]bool{}
	for range 50 {
		p, err := NewULAPrefix()
		if err != nil || !ValidULAPrefix(p) || seen[p] {
			t.Fatalf("NewULAPrefix = %v, %v (seen %v)", p, err, seen[p])
		}
		seen[p] = true
	}
}

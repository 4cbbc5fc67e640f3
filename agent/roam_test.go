package agent

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

// TestRoamHold: while a direct path is active, a packet that still comes
// through the relay reaches WireGuard as if from the direct endpoint, so
// WireGuard does not roam back to the relay; with the relay active it
// keeps its own endpoint, as it does under a birthday path.
func TestRoamHold(t *testing.T) {
	b := NewBind()
	relayed := b.relays.add(netip.MustParseAddrPort("203.0.113.10:50000"), nil)
	direct := netip.MustParseAddrPort("198.51.100.7:41000")
	var r roamHold
	if got := r.endpoint(relayed); got != relayed {
		t.Fatalf("no path yet: %v, want the relay endpoint", got)
	}
	r.set(true, direct)
	got, ok := r.endpoint(relayed).(*conn.StdNetEndpoint)
	if !ok || got.AddrPort != direct {
		t.Fatalf("direct path active: relayed packet attributed to %v, want %v", r.endpoint(relayed), direct)
	}
	r.set(false, relayed.addr)
	if got := r.endpoint(relayed); got != relayed {
		t.Fatalf("relay active again: %v, want the relay endpoint", got)
	}
	// A birthday path (not the direct lane) keeps WireGuard's roaming.
	r.set(false, netip.MustParseAddrPort("198.18.3.2:6000"))
	if got := r.endpoint(relayed); got != relayed {
		t.Fatalf("punched path active: %v, want the relay endpoint", got)
	}
}

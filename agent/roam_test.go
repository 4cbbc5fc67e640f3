package agent

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestRoamHold: for roamGrace after the path moves off the relay, a
// packet that still comes through the relay reaches WireGuard as if from
// the new path's endpoint, so WireGuard does not roam back to the relay;
// after it, or with the relay active, it keeps its own endpoint.
func TestRoamHold(t *testing.T) {
	b := NewBind()
	relayed := b.relays.add(netip.MustParseAddrPort("203.0.113.10:50000"), nil)
	direct := netip.MustParseAddrPort("198.51.100.7:41000")
	now := time.Unix(1_700_000_000, 0)
	var r roamHold
	if got := r.endpoint(relayed, now); got != relayed {
		t.Fatalf("no path yet: %v, want the relay endpoint", got)
	}
	r.set(b, false, direct, now)
	got, ok := r.endpoint(relayed, now.Add(time.Second)).(*conn.StdNetEndpoint)
	if !ok || got.AddrPort != direct {
		t.Fatalf("1 s after the move: relayed packet attributed to %v, want %v", r.endpoint(relayed, now), direct)
	}
	r.set(b, false, direct, now.Add(4*time.Second)) // same path: the grace runs on
	if got := r.endpoint(relayed, now.Add(roamGrace+time.Millisecond)); got != relayed {
		t.Fatalf("after the grace: %v, want the relay endpoint (the peer really uses it)", got)
	}
	r.set(b, true, relayed.addr, now)
	if got := r.endpoint(relayed, now); got != relayed {
		t.Fatalf("relay active again: %v, want the relay endpoint", got)
	}
	// A birthday path's endpoint is routed through its own socket.
	punched := b.relays.add(netip.MustParseAddrPort("198.18.3.2:6000"), nil)
	r.set(b, false, punched.addr, now)
	if got := r.endpoint(relayed, now); got != punched {
		t.Fatalf("punched path active: %v, want its endpoint", got)
	}
}

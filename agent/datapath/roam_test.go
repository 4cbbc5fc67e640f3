package datapath

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestRoamHold: for RoamGrace after the path moves off the relay, a
// packet that still comes through the relay reaches WireGuard as if from
// the new path's endpoint, so WireGuard does not roam back to the relay;
// after it, or with the relay active, it keeps its own endpoint.
func TestRoamHold(t *testing.T) {
	b := NewBind(nil)
	relayed := b.Route(netip.MustParseAddrPort("203.0.113.10:50000"), nil)
	direct := netip.MustParseAddrPort("198.51.100.7:41000")
	now := time.Unix(1_700_000_000, 0)
	var r RoamHold
	if got := r.Endpoint(relayed, now); got != relayed {
		t.Fatalf("no path yet: %v, want the relay endpoint", got)
	}
	r.Set(b, false, direct, now)
	got, ok := r.Endpoint(relayed, now.Add(time.Second)).(*conn.StdNetEndpoint)
	if !ok || got.AddrPort != direct {
		t.Fatalf("1 s after the move: relayed packet attributed to %v, want %v", r.Endpoint(relayed, now), direct)
	}
	r.Set(b, false, direct, now.Add(4*time.Second)) // same path: the grace runs on
	if got := r.Endpoint(relayed, now.Add(RoamGrace+time.Millisecond)); got != relayed {
		t.Fatalf("after the grace: %v, want the relay endpoint (the peer really uses it)", got)
	}
	r.Set(b, true, relayed.Addr(), now)
	if got := r.Endpoint(relayed, now); got != relayed {
		t.Fatalf("relay active again: %v, want the relay endpoint", got)
	}
	// A birthday path's endpoint is routed through its own socket.
	punched := b.Route(netip.MustParseAddrPort("198.18.3.2:6000"), nil)
	r.Set(b, false, punched.Addr(), now)
	if got := r.Endpoint(relayed, now); got != punched {
		t.Fatalf("punched path active: %v, want its endpoint", got)
	}
}

package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

func TestOverlay6FromJoin(t *testing.T) {
	for _, c := range []struct {
		ip6, prefix6 string
		ok           bool
	}{
		{"fd12:3456:789a::6440:1", "fd12:3456:789a::/48", true},
		{"", "", false}, // an older coordinator
		{"fd12:3456:789b::6440:1", "fd12:3456:789a::/48", false}, // outside the prefix
		{"2001:db8::1", "2001:db8::/48", false},                  // not a ULA
		{"fd12:3456:789a::6440:1", "fd12:3456:789a::/64", false},
	} {
		a, p := overlay6FromJoin(&control.RegisterResponse{IP6: c.ip6, Prefix6: c.prefix6})
		if a.IsValid() != c.ok || p.IsValid() != c.ok {
			t.Errorf("%s in %s: got %v %v, want ok=%v", c.ip6, c.prefix6, a, p, c.ok)
		}
	}
}

// A peer's IPv6 address goes into WireGuard only when it is one of this
// mesh's: a coordinator cannot route another prefix (or the internet) to
// a peer through it.
func TestOverlayIPs(t *testing.T) {
	a := &Agent{prefix6: netip.MustParsePrefix("fd12:3456:789a::/48")}
	n := control.Node{IP: "100.64.0.2", IP6: "fd12:3456:789a::6440:2"}
	want := []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd12:3456:789a::6440:2/128")}
	if got := a.overlayIPs(n); !slices.Equal(got, want) {
		t.Fatalf("overlayIPs = %v, want %v", got, want)
	}
	if got := allowedIPs(want); got != "allowed_ip=100.64.0.2/32\nallowed_ip=fd12:3456:789a::6440:2/128\n" {
		t.Fatalf("allowedIPs = %q", got)
	}
	for _, bad := range []string{"2001:db8::1", "fd12:3456:789b::1", "::", "100.64.0.9", "junk"} {
		n.IP6 = bad
		if got := a.overlayIPs(n); len(got) != 1 {
			t.Errorf("IP6 %q: overlayIPs = %v, want the IPv4 /32 only", bad, got)
		}
	}
	old := &Agent{} // joined through an older coordinator: no prefix
	n.IP6 = "fd12:3456:789a::6440:2"
	if got := old.overlayIPs(n); len(got) != 1 {
		t.Errorf("without a prefix: overlayIPs = %v", got)
	}
}

func TestResolvePeerAndPingAddrs(t *testing.T) {
	st := &Status{
		Self:  SelfStatus{IP: "100.64.0.1", IP6: "fd12:3456:789a::6440:1"},
		Peers: []PeerStatus{{Name: "server", IP: "100.64.0.2", IP6: "fd12:3456:789a::6440:2"}, {Name: "old", IP: "100.64.0.3"}},
	}
	for _, target := range []string{"server", "100.64.0.2", "fd12:3456:789a::6440:2", "FD12:3456:789A:0:0:0:6440:2", "fd12:3456:789a::100.64.0.2"} {
		if p, err := ResolvePeer(st, target); err != nil || p.Name != "server" {
			t.Errorf("ResolvePeer(%q) = %v, %v", target, p, err)
		}
	}
	p, _ := ResolvePeer(st, "server")
	if dst, from, err := pingAddrs(st, p, true); err != nil || dst.String() != "fd12:3456:789a::6440:2" || from.String() != "fd12:3456:789a::6440:1" {
		t.Errorf("pingAddrs -6: %v from %v (%v)", dst, from, err)
	}
	if dst, _, err := pingAddrs(st, p, false); err != nil || dst.String() != "100.64.0.2" {
		t.Errorf("pingAddrs: %v (%v)", dst, err)
	}
	old, _ := ResolvePeer(st, "old")
	if _, _, err := pingAddrs(st, old, true); err == nil {
		t.Error("ping -6 to a peer without an IPv6 address: no error")
	}
	st.Self.IP6 = ""
	if _, _, err := pingAddrs(st, p, true); err == nil {
		t.Error("ping -6 from a node without an IPv6 address: no error")
	}
}

// The resolver gives AAAA answers only while this node can use them.
func TestDNSIP6(t *testing.T) {
	a := &Agent{prefix6: netip.MustParsePrefix("fd12:3456:789a::/48")}
	n := control.Node{IP: "100.64.0.2", IP6: "fd12:3456:789a::6440:2"}
	if ip := a.dnsIP6(n); ip.IsValid() {
		t.Fatalf("AAAA %v while IPv6 is off on this node", ip)
	}
	a.overlay6.Store(true)
	if ip := a.dnsIP6(n); ip.String() != n.IP6 {
		t.Fatalf("AAAA %v, want %s", ip, n.IP6)
	}
}

package coordinator

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

func TestSanitizeHostname(t *testing.T) {
	long := strings.Repeat("a", 70)
	cases := map[string]string{
		"":               "node",
		"Laptop":         "laptop",
		"my_laptop":      "my-laptop",
		"laptop.local":   "laptop",
		"--a--b--":       "a-b",
		"héllo wörld":    "h-llo-w-rld",
		"!!!":            "node",
		".hidden":        "node",
		long:             long[:63],
		long[:62] + "-x": long[:62],
	}
	for in, want := range cases {
		got := sanitizeHostname(in)
		if got != want {
			t.Errorf("sanitizeHostname(%q) = %q, want %q", in, got, want)
		}
		if len(got) == 0 || len(got) > 63 || strings.HasPrefix(got, "-") || strings.HasSuffix(got, "-") {
			t.Errorf("sanitizeHostname(%q) = %q: not a DNS label", in, got)
		}
	}
}

func TestNameCandidate(t *testing.T) {
	if got := nameCandidate("web", 1); got != "web" {
		t.Errorf("got %q", got)
	}
	if got := nameCandidate("web", 3); got != "web-3" {
		t.Errorf("got %q", got)
	}
	long := strings.Repeat("b", 63)
	if got := nameCandidate(long, 12); len(got) != 63 || !strings.HasSuffix(got, "-12") {
		t.Errorf("got %q", got)
	}
}

func TestFirstFree(t *testing.T) {
	p := netip.MustParsePrefix("100.64.0.0/30")
	used := map[netip.Addr]bool{}
	taken := func(a netip.Addr) (bool, error) { return used[a], nil }
	a, err := firstFree(p, netip.Addr{}, taken)
	if err != nil || a != netip.MustParseAddr("100.64.0.1") {
		t.Fatalf("first: %v %v", a, err)
	}
	used[a] = true
	b, err := firstFree(p, a, taken)
	if err != nil || b != netip.MustParseAddr("100.64.0.2") {
		t.Fatalf("second: %v %v", b, err)
	}
	used[b] = true
	if c, err := firstFree(p, b, taken); err == nil {
		t.Fatalf("pool of a /30 gave a third address %v", c)
	}
	// A freed gap is found when the walk starts below it.
	delete(used, a)
	if c, _ := firstFree(p, netip.Addr{}, taken); c != a {
		t.Fatalf("gap: got %v, want %v", c, a)
	}
	if c, err := firstFree(p, b, taken); err == nil {
		t.Fatalf("walk from the hint went below it: %v", c)
	}
}

// The agents' resolver address is never a node's, even when the walk
// reaches it.
func TestFirstFreeSkipsResolverAddr(t *testing.T) {
	below := control.ResolverAddr.Prev()
	taken := func(a netip.Addr) (bool, error) { return a == below, nil }
	a, err := firstFree(control.OverlayPrefix, below, taken)
	if err != nil || a != control.ResolverAddr.Next() {
		t.Fatalf("got %v %v, want %v", a, err, control.ResolverAddr.Next())
	}
}

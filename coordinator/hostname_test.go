package coordinator

import (
	"net/netip"
	"strings"
	"testing"
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

func TestAllocateIP(t *testing.T) {
	p := netip.MustParsePrefix("100.64.0.0/30")
	used := map[netip.Addr]bool{}
	a, err := allocateIP(p, used)
	if err != nil || a != netip.MustParseAddr("100.64.0.1") {
		t.Fatalf("first: %v %v", a, err)
	}
	used[a] = true
	b, err := allocateIP(p, used)
	if err != nil || b != netip.MustParseAddr("100.64.0.2") {
		t.Fatalf("second: %v %v", b, err)
	}
	used[b] = true
	if c, err := allocateIP(p, used); err == nil {
		t.Fatalf("pool of a /30 gave a third address %v", c)
	}
	// A freed gap is filled first.
	delete(used, a)
	if c, _ := allocateIP(p, used); c != a {
		t.Fatalf("gap: got %v, want %v", c, a)
	}
}

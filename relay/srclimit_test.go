package relay

import (
	"net/netip"
	"testing"
	"time"
)

func TestSourceLimiter(t *testing.T) {
	l := NewSourceLimiter(3, 1)
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("203.0.113.7")
	for i := range 3 {
		if !l.allow(a, now) {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow(a, now) {
		t.Error("fourth request at once allowed")
	}
	if !l.allow(netip.MustParseAddr("::ffff:203.0.113.8"), now) {
		t.Error("another source refused")
	}
	if l.allow(netip.MustParseAddr("::ffff:203.0.113.7"), now) {
		t.Error("the IPv4-mapped form of an exhausted source allowed")
	}
	if !l.allow(a, now.Add(1100*time.Millisecond)) || l.allow(a, now.Add(1100*time.Millisecond)) {
		t.Error("want exactly one token back after a second")
	}
	// IPv6: one /64 shares a bucket.
	for i := range 3 {
		l.allow(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), now)
	}
	if l.allow(netip.MustParseAddr("2001:db8::ffff:1"), now) {
		t.Error("a fourth address of an exhausted /64 allowed")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Error("another /64 refused")
	}
	// Memory stays bounded under a spray of sources.
	l.keyed.MaxKeys = 100
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), now)
	}
	if n := l.keyed.Len(); n > 100 {
		t.Errorf("%d buckets after a spray, want at most 100", n)
	}
}

package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:443":             "192.0.2.1",
		"192.0.2.1":                 "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::/64",
		"[::ffff:192.0.2.1]:80":     "192.0.2.1",
		"[fe80::1%eth0]:80":         "fe80::/64",
		"not an address":            "not an address",
	} {
		if got := SourceKey(in); got != want {
			t.Errorf("SourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestKeyedConcurrent: however many goroutines reserve at once, no more
// than the burst get a token.
func TestKeyedConcurrent(t *testing.T) {
	k := NewKeyed(Rate{Burst: 20, PerSec: 0}, 10)
	var got atomic.Int64
	var wg sync.WaitGroup
	now := time.Now()
	for range 300 {
		wg.Go(func() {
			if ok, _ := k.Reserve("a", now); ok {
				got.Add(1)
			}
		})
	}
	wg.Wait()
	if got.Load() != 20 {
		t.Fatalf("%d reservations granted, want 20", got.Load())
	}
	k.Refund("a")
	if ok, _ := k.Reserve("a", now); !ok {
		t.Fatal("a refunded token was not granted")
	}
}

func TestKeyedRefillAndBound(t *testing.T) {
	k := NewKeyed(Rate{Burst: 2, PerSec: 1}, 100)
	now := time.Now()
	k.Reserve("a", now)
	k.Reserve("a", now)
	if ok, wait := k.Reserve("a", now); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("empty bucket: ok %v wait %v", ok, wait)
	}
	if ok, _ := k.Reserve("a", now.Add(1100*time.Millisecond)); !ok {
		t.Fatal("no token after a second")
	}
	for i := range 1000 {
		k.Reserve(string(rune('a'+i%26))+time.Duration(i).String(), now)
	}
	if n := k.Len(); n > 100 {
		t.Fatalf("%d buckets held, want at most 100", n)
	}
}

package coordinator

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestAuthLimiterAtomic: concurrent bad attempts from one fresh address
// must not all pass the check before any is charged: at most the burst may
// reach the store and get 401.
func TestAuthLimiterAtomic(t *testing.T) {
	s := newServerWith(t, func(c *Config) { c.AuthFailBurst, c.AuthFailPerMinute = 20, 1 })
	h := s.Handler()
	body := `{"auth_key":"` + AuthKeyPrefix + strings.Repeat("x", 43) + `","hostname":"h","public_key":"` + newPublicKey(t) + `"}`
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			r := newRecorder(h, "192.0.2.9:1000", body)
			mu.Lock()
			codes[r.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("answers: %v", codes)
	if codes[http.StatusUnauthorized] > 20 {
		t.Fatalf("%d answers of 401 for a burst of 20 (answers %v)", codes[http.StatusUnauthorized], codes)
	}
	if codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 300 {
		t.Fatalf("answers %v: want only 401 and 429", codes)
	}
}

// TestAuthLimiterIPv6Prefix: one IPv6 /64 shares one budget, so a client
// cannot get a fresh bucket per address; another /64 has its own.
func TestAuthLimiterIPv6Prefix(t *testing.T) {
	s := newServerWith(t, func(c *Config) { c.AuthFailBurst, c.AuthFailPerMinute = 3, 1 })
	h := s.Handler()
	bad := `{"auth_key":"` + AuthKeyPrefix + strings.Repeat("x", 43) + `","hostname":"h","public_key":"` + newPublicKey(t) + `"}`
	for i, remote := range []string{"[2001:db8::1]:1000", "[2001:db8::2]:1000", "[2001:db8::3:4]:1000"} {
		if r := newRecorder(h, remote, bad); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d from %s: %d, want 401", i, remote, r.StatusCode)
		}
	}
	if r := newRecorder(h, "[2001:db8::ffff:1]:1000", bad); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth address of the same /64: %d, want 429", r.StatusCode)
	}
	if r := newRecorder(h, "[2001:db8:0:1::1]:1000", bad); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("another /64: %d, want 401", r.StatusCode)
	}
}

// newServerWith is newTestServer with cfg adjusted by set.
func newServerWith(t *testing.T, set func(*Config)) *Server {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t)}
	set(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

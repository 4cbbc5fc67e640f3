package coordinator

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestAuthKeyMaxUses: a key with --max-uses N admits N nodes, even when
// more try at once, and is then refused.
func TestAuthKeyMaxUses(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	k, err := s.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Reusable: true, MaxUses: 3})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			code, _, _ := register(t, h, control.RegisterRequest{AuthKey: k.Key, Hostname: "n", PublicKey: newPublicKey(t)})
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusOK] != 3 || codes[http.StatusUnauthorized] != 17 {
		t.Fatalf("20 joins with a key of 3 uses: %v, want 3 admitted and 17 refused", codes)
	}
	_, _, e := register(t, h, control.RegisterRequest{AuthKey: k.Key, Hostname: "n", PublicKey: newPublicKey(t)})
	if e.Error != ErrAuthKeyUsedUp.Error() {
		t.Fatalf("refusal %q, want %q", e.Error, ErrAuthKeyUsedUp)
	}
	keys, err := s.store.ListAuthKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Uses != 3 || keys[0].MaxUses != 3 || keys[0].State(s.store.Now()) != "used" {
		t.Fatalf("listed key: uses %d max %d state %s", keys[0].Uses, keys[0].MaxUses, keys[0].State(s.store.Now()))
	}
}

// TestJoinRateLimit: one auth key admits at most the join burst at once;
// another key has its own budget, and rejoining by credential is free.
func TestJoinRateLimit(t *testing.T) {
	s := newServerWith(t, func(c *Config) { c.JoinBurst, c.JoinPerMinute = 5, 1 })
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	var first control.RegisterResponse
	var firstPub string
	for i := range 5 {
		pub := newPublicKey(t)
		r := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: pub})
		if i == 0 {
			first, firstPub = r, pub
		}
	}
	rec := newRecorder(h, "192.0.2.1:1", `{"auth_key":"`+key+`","hostname":"n","public_key":"`+newPublicKey(t)+`"}`)
	if rec.StatusCode != http.StatusTooManyRequests || rec.Header.Get("Retry-After") == "" {
		t.Fatalf("sixth join at once: %d (Retry-After %q), want 429", rec.StatusCode, rec.Header.Get("Retry-After"))
	}
	mustRegister(t, h, control.RegisterRequest{AuthKey: newKey(t, s.store, true, 0), Hostname: "other", PublicKey: newPublicKey(t)})
	mustRegister(t, h, control.RegisterRequest{Credential: first.Credential, Hostname: "n", PublicKey: firstPub})
}

// TestNodeCap: past the mesh's node cap new nodes are refused (503), so
// the netmap stays within what agents read; known nodes still rejoin.
func TestNodeCap(t *testing.T) {
	s := newServerWith(t, func(c *Config) { c.MaxNodes = 3 })
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	pub := newPublicKey(t)
	r := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: pub})
	for range 2 {
		mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: newPublicKey(t)})
	}
	code, _, e := register(t, h, control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: newPublicKey(t)})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("fourth node with a cap of 3: %d %q, want 503", code, e.Error)
	}
	mustRegister(t, h, control.RegisterRequest{Credential: r.Credential, Hostname: "a", PublicKey: pub})
}

// TestNetmapFitsAgentLimit: a mesh of the most nodes the coordinator
// admits, each of the largest encoding its limits allow, makes a netmap the
// agent reads (control.MaxNetmapFrame).
func TestNetmapFitsAgentLimit(t *testing.T) {
	tags := make([]string, maxTags)
	for i := range tags {
		tags[i] = strings.Repeat("t", maxTagLen-2) + strconv.Itoa(10+i)
	}
	n := control.Node{ID: math.MaxUint64, Name: strings.Repeat("n", maxNameLen), IP: "100.127.255.254",
		PublicKey: strings.Repeat("A", 43) + "=", Online: true, LastSeen: time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC), Tags: tags}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > control.MaxNodeJSON {
		t.Fatalf("largest node encodes to %d bytes, more than control.MaxNodeJSON %d", len(b), control.MaxNodeJSON)
	}
	// One comma per node, and a megabyte for self, STUN and relays.
	if size := control.MaxNodes*(control.MaxNodeJSON+1) + 1<<20; size > control.MaxNetmapFrame {
		t.Fatalf("netmap of %d nodes may reach %d bytes, over the agent's %d", control.MaxNodes, size, control.MaxNetmapFrame)
	}
}

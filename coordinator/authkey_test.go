package coordinator

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

func TestAuthKeyFormat(t *testing.T) {
	s := newTestServer(t)
	k := newKey(t, s.store, false, time.Hour)
	if !strings.HasPrefix(k, AuthKeyPrefix) || len(k) < len(AuthKeyPrefix)+43 {
		t.Fatalf("key %q: want prefix %q and at least 32 random bytes", k, AuthKeyPrefix)
	}
	if k2 := newKey(t, s.store, false, time.Hour); k2 == k {
		t.Fatal("two keys are equal")
	}
}

func TestAuthKeySingleUse(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, false, time.Hour)
	mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	code, _, e := register(t, h, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	if code != http.StatusUnauthorized || e.Error != "auth key already used" {
		t.Fatalf("second use: %d %q, want 401 %q", code, e.Error, "auth key already used")
	}
}

func TestAuthKeyReusable(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	for i := range 5 {
		r := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "host", PublicKey: newPublicKey(t)})
		if r.NodeID == 0 {
			t.Fatalf("use %d: no node ID", i)
		}
	}
}

func TestAuthKeyExpired(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, time.Minute)
	s.store.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	code, _, e := register(t, h, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	if code != http.StatusUnauthorized || e.Error != "auth key expired" {
		t.Fatalf("got %d %q, want 401 %q", code, e.Error, "auth key expired")
	}
}

func TestAuthKeyNeverExpires(t *testing.T) {
	s := newTestServer(t)
	key := newKey(t, s.store, false, 0)
	s.store.now = func() time.Time { return time.Now().Add(100 * 365 * 24 * time.Hour) }
	mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
}

func TestAuthKeyUnknown(t *testing.T) {
	s := newTestServer(t)
	for _, key := range []string{"mvk-nope", "garbage", AuthKeyPrefix + strings.Repeat("A", 43)} {
		code, _, e := register(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
		if code != http.StatusUnauthorized || e.Error != "unknown auth key" {
			t.Errorf("key %q: got %d %q, want 401 %q", key, code, e.Error, "unknown auth key")
		}
	}
}

func TestCreateAuthKeyNegativeExpiry(t *testing.T) {
	s := newTestServer(t)
	if _, err := s.store.CreateAuthKey(t.Context(), false, -time.Second); err == nil {
		t.Fatal("negative expiry accepted")
	}
}

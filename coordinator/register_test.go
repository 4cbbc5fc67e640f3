package coordinator

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

func TestRegisterAllocatesAddresses(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	want := []struct{ name, ip string }{
		{"laptop", "100.64.0.1"},
		{"laptop-2", "100.64.0.2"},
		{"laptop-3", "100.64.0.3"},
		{"server", "100.64.0.4"},
		{"node", "100.64.0.5"},
	}
	hostnames := []string{"Laptop", "laptop.local", "LAPTOP", "server", "_!!_"}
	for i, hn := range hostnames {
		r := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: hn, PublicKey: newPublicKey(t)})
		if r.Name != want[i].name || r.IP != want[i].ip {
			t.Errorf("%q: got %s %s, want %s %s", hn, r.Name, r.IP, want[i].name, want[i].ip)
		}
		if r.Prefix != "100.64.0.0/10" {
			t.Errorf("prefix %q", r.Prefix)
		}
		if !strings.HasPrefix(r.Credential, strconv.FormatUint(r.NodeID, 10)+".") {
			t.Errorf("credential does not start with the node ID")
		}
	}
}

func TestReRegisterKeepsIdentity(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	nk := newNodeKey(t)
	pk := nk.pub
	first := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: pk})
	mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})

	// Same public key with an auth key and proof of its private key: same
	// node, new credential.
	again := mustRegister(t, h, nk.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "renamed"}))
	if again.NodeID != first.NodeID || again.IP != first.IP || again.Name != first.Name {
		t.Fatalf("re-admit by key: got %+v, want node %d %s %s", again, first.NodeID, first.Name, first.IP)
	}
	if again.Credential == first.Credential {
		t.Fatal("re-admit by key kept the old credential")
	}
	// The old credential is replaced.
	code, _, _ := register(t, h, control.RegisterRequest{Credential: first.Credential, PublicKey: pk})
	if code != http.StatusUnauthorized {
		t.Fatalf("old credential: status %d, want 401", code)
	}

	// By credential: same node, same credential.
	byCred := mustRegister(t, h, control.RegisterRequest{Credential: again.Credential, Hostname: "whatever", PublicKey: pk})
	if byCred.NodeID != first.NodeID || byCred.IP != first.IP || byCred.Credential != again.Credential {
		t.Fatalf("by credential: got %+v", byCred)
	}
	// The credential is bound to the public key: with another key it is
	// refused, and the node keeps its key.
	code, _, e := register(t, h, control.RegisterRequest{Credential: again.Credential, Hostname: "whatever", PublicKey: newPublicKey(t)})
	if code != http.StatusUnauthorized || e.Error != ErrCredentialKeyMismatch.Error() {
		t.Fatalf("credential with another public key: %d %q, want 401 %q", code, e.Error, ErrCredentialKeyMismatch)
	}
	nodes, err := s.store.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if nodes[0].PublicKey != pk {
		t.Fatalf("public key changed to %s", nodes[0].PublicKey)
	}
}

func TestRegisterCredentialErrors(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	a := mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	bKey := newPublicKey(t)
	mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: bKey})

	// Taking another node's public key.
	code, _, e := register(t, h, control.RegisterRequest{Credential: a.Credential, PublicKey: bKey})
	if code != http.StatusUnauthorized || e.Error != ErrCredentialKeyMismatch.Error() {
		t.Fatalf("stolen public key: %d %q, want 401 %q", code, e.Error, ErrCredentialKeyMismatch)
	}
	for _, cred := range []string{"x", "1.", "0.abc", "99.abc", a.Credential + "x", "1.AAAA"} {
		code, _, e := register(t, h, control.RegisterRequest{Credential: cred, PublicKey: newPublicKey(t)})
		if code != http.StatusUnauthorized || e.Error != "invalid credential" {
			t.Errorf("credential %q: %d %q, want 401", cred, code, e.Error)
		}
	}
	// A stale credential with an auth key falls back to the key.
	r := mustRegister(t, h, control.RegisterRequest{Credential: "1.stale", AuthKey: key, Hostname: "c", PublicKey: newPublicKey(t)})
	if r.Name != "c" {
		t.Fatalf("fallback to auth key: got %+v", r)
	}
}

func TestRegisterMalformed(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	pk := newPublicKey(t)
	cases := map[string]string{
		"empty":             ``,
		"not json":          `hello`,
		"array":             `[]`,
		"null":              `null`,
		"wrong types":       `{"auth_key": 5, "public_key": true}`,
		"truncated":         `{"auth_key": "` + key,
		"no secret":         `{"hostname":"a","public_key":"` + pk + `"}`,
		"bad public key":    `{"auth_key":"` + key + `","public_key":"abc"}`,
		"public key 44 bad": `{"auth_key":"` + key + `","public_key":"` + strings.Repeat("!", 43) + `="}`,
		"long hostname":     `{"auth_key":"` + key + `","hostname":"` + strings.Repeat("a", 64) + `","public_key":"` + pk + `"}`,
		"trailing data":     `{"auth_key":"` + key + `","public_key":"` + pk + `"} {}`,
		"long key":          `{"auth_key":"` + strings.Repeat("k", 1000) + `","public_key":"` + pk + `"}`,
		"huge body":         `{"hostname":"` + strings.Repeat("a", control.MaxRequestBody) + `"}`,
	}
	for name, body := range cases {
		code, _, _ := postRegister(t, h, []byte(body))
		if code < 400 || code >= 500 {
			t.Errorf("%s: status %d, want 4xx", name, code)
		}
	}
	if n, _ := s.store.ListNodes(t.Context()); len(n) != 0 {
		t.Fatalf("malformed requests created %d nodes", len(n))
	}
}

func TestRegisterWrongMethod(t *testing.T) {
	s := newTestServer(t)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, control.PathRegister, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
		t.Fatalf("GET register: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestStorePersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	single := newKey(t, s.store, false, time.Hour)
	reusable := newKey(t, s.store, true, time.Hour)
	pk := newPublicKey(t)
	first := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: single, Hostname: "keeper", PublicKey: pk})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h := s2.Handler()
	code, _, e := register(t, h, control.RegisterRequest{AuthKey: single, Hostname: "x", PublicKey: newPublicKey(t)})
	if code != http.StatusUnauthorized || e.Error != "auth key already used" {
		t.Fatalf("used key after restart: %d %q", code, e.Error)
	}
	again := mustRegister(t, h, control.RegisterRequest{Credential: first.Credential, PublicKey: pk})
	if again.NodeID != first.NodeID || again.IP != first.IP || again.Name != "keeper" {
		t.Fatalf("after restart: %+v, want %+v", again, first)
	}
	next := mustRegister(t, h, control.RegisterRequest{AuthKey: reusable, Hostname: "keeper", PublicKey: newPublicKey(t)})
	if next.Name != "keeper-2" || next.IP != "100.64.0.2" {
		t.Fatalf("new node after restart: %+v", next)
	}
}

func TestStoreFileModes(t *testing.T) {
	dir := t.TempDir() + "/state"
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for path, want := range map[string]uint32{dir: 0o700, st.Path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := uint32(fi.Mode().Perm()); got&^want != 0 {
			t.Errorf("%s: mode %o, want at most %o", path, got, want)
		}
	}
}

package coordinator

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestProofReadmitsOnlyTheKeyHolder: an existing public key is re-admitted
// by auth key only with a valid proof from its holder; a member who names
// it without, or with a proof made with another key, is refused and gets
// no credential, and the node keeps its credential.
func TestProofReadmitsOnlyTheKeyHolder(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	victim := newNodeKey(t)
	// A new node may prove too (agents always do).
	first := mustRegister(t, h, victim.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "victim"}))

	attacker := newNodeKey(t)
	cases := []struct {
		name string
		req  control.RegisterRequest
		code int
		err  error
	}{
		{"no proof", control.RegisterRequest{AuthKey: newKey(t, s.store, false, 0), Hostname: "evil", PublicKey: victim.pub},
			http.StatusConflict, ErrPublicKeyInUse},
		{"attacker's own proof", func() control.RegisterRequest {
			r := attacker.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "evil"})
			r.PublicKey = victim.pub
			return r
		}(), http.StatusUnauthorized, ErrBadProof},
		{"victim's proof, other auth key", func() control.RegisterRequest {
			r := victim.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "victim"})
			r.AuthKey = newKey(t, s.store, false, 0)
			return r
		}(), http.StatusUnauthorized, ErrBadProof},
		{"victim's proof, other hostname", func() control.RegisterRequest {
			r := victim.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "victim"})
			r.Hostname = "evil"
			return r
		}(), http.StatusUnauthorized, ErrBadProof},
		{"proof without challenge of ours", func() control.RegisterRequest {
			ch := fetchChallenge(t, h)
			ch.Challenge = base64.RawURLEncoding.EncodeToString(make([]byte, challengeLen))
			return victim.prove(t, ch, control.RegisterRequest{AuthKey: key, Hostname: "victim"})
		}(), http.StatusUnauthorized, ErrChallengeStale},
	}
	for _, c := range cases {
		code, resp, e := register(t, h, c.req)
		if code != c.code || e.Error != c.err.Error() || resp.Credential != "" {
			t.Errorf("%s: %d %q %+v, want %d %q", c.name, code, e.Error, resp, c.code, c.err)
		}
	}
	// The victim's credential still works.
	byCred := mustRegister(t, h, control.RegisterRequest{Credential: first.Credential, PublicKey: victim.pub})
	if byCred.NodeID != first.NodeID {
		t.Fatalf("victim by credential: %+v", byCred)
	}
	// The store on its own (no proof checked) refuses an existing key too.
	if _, err := s.store.Register(t.Context(), control.RegisterRequest{AuthKey: key, Hostname: "x", PublicKey: victim.pub}); !errors.Is(err, ErrPublicKeyInUse) {
		t.Fatalf("store.Register of a known key: %v, want ErrPublicKeyInUse", err)
	}
}

// TestProofReplay: a proven request is accepted once; sent again, to this
// coordinator or another one, or after its challenge expired, it is refused.
func TestProofReplay(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	node := newNodeKey(t)
	mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: node.pub})

	req := node.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "n"})
	mustRegister(t, h, req)
	if code, _, e := register(t, h, req); code != http.StatusUnauthorized || e.Error != ErrChallengeStale.Error() {
		t.Errorf("replay: %d %q, want 401 %q", code, e.Error, ErrChallengeStale)
	}

	// Another coordinator (its own key and challenge secret) with the same
	// auth key and node in its store.
	other := newTestServer(t)
	okey := newKey(t, other.store, true, 0)
	mustRegister(t, other.Handler(), control.RegisterRequest{AuthKey: okey, Hostname: "n", PublicKey: node.pub})
	fresh := node.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: okey, Hostname: "n"})
	if code, _, e := register(t, other.Handler(), fresh); code != http.StatusUnauthorized || e.Error != ErrBadProof.Error() {
		t.Errorf("request made for another coordinator: %d %q, want 401 %q", code, e.Error, ErrBadProof)
	}

	// A challenge past its lifetime.
	late := node.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "n"})
	s.challenges.now = func() time.Time { return time.Now().Add(challengeTTL + time.Second) }
	if code, _, e := register(t, h, late); code != http.StatusUnauthorized || e.Error != ErrChallengeStale.Error() {
		t.Errorf("expired challenge: %d %q, want 401 %q", code, e.Error, ErrChallengeStale)
	}
}

// TestChallengesForgetExpired: used challenges are remembered only until
// they expire, so the memory stays bounded.
func TestChallengesForgetExpired(t *testing.T) {
	now := time.Now()
	c, err := newChallenges(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		ch, err := c.issue()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.use(ch); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.used) != 100 {
		t.Fatalf("%d used challenges remembered, want 100", len(c.used))
	}
	now = now.Add(challengeTTL + 2*time.Second)
	ch, _ := c.issue()
	if err := c.use(ch); err != nil {
		t.Fatal(err)
	}
	if len(c.used) != 1 {
		t.Fatalf("%d used challenges remembered after expiry, want 1", len(c.used))
	}
}

// TestDegenerateKeysRefused: the zero key and the low-order points of
// Curve25519 (in their canonical and non-canonical forms) are refused.
func TestDegenerateKeysRefused(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	// Little-endian u-coordinates: 0, 1, the two points of order 8, p-1,
	// p, p+1, and the first ones again with the (ignored) top bit set.
	points := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"0000000000000000000000000000000000000000000000000000000000000080",
		"0100000000000000000000000000000000000000000000000000000000000080",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
	}
	for _, p := range points {
		b, _ := hex.DecodeString(p)
		pub := base64.StdEncoding.EncodeToString(b)
		if !isLowOrder(pub) {
			t.Errorf("isLowOrder(%s) is false", p)
		}
		code, resp, e := register(t, h, control.RegisterRequest{AuthKey: key, Hostname: "d", PublicKey: pub})
		if code != http.StatusBadRequest || e.Error != ErrDegenerateKey.Error() || resp.Credential != "" {
			t.Errorf("key %s: %d %q, want 400 %q", p, code, e.Error, ErrDegenerateKey)
		}
	}
	if nodes, _ := s.store.ListNodes(t.Context()); len(nodes) != 0 {
		t.Fatalf("nodes made with degenerate keys: %v", nodes)
	}
	// The table agrees with the key agreement on ordinary keys too.
	for range 1000 {
		pub := newPublicKey(t)
		_, err := s.identity.shared(pub)
		if isLowOrder(pub) != (err != nil) {
			t.Fatalf("%s: isLowOrder %v, key agreement error %v", pub, isLowOrder(pub), err)
		}
	}
}

// TestIdentityKeyFile: the coordinator's key is made once, mode 0600, and
// the same after a restart.
func TestIdentityKeyFile(t *testing.T) {
	dir := t.TempDir()
	a, err := loadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, identityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := loadIdentity(dir)
	if err != nil || b.pub != a.pub {
		t.Fatalf("reloaded key %v %v, want %s", b, err, a.pub)
	}
	if err := os.WriteFile(filepath.Join(dir, identityKeyFile), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(dir); err == nil {
		t.Fatal("a damaged key file was accepted")
	}
}

// TestStateDirTightened: an existing state dir with looser permissions is
// tightened to 0700 when the server starts.
func TestStateDirTightened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir left at mode %v, want 0700", fi.Mode().Perm())
	}
}

// BenchmarkCheckProof is what a proven registration adds on the server:
// one X25519 and two HMACs, plus the challenge check.
func BenchmarkCheckProof(b *testing.B) {
	s := newTestServer(b)
	h := s.Handler()
	node := newNodeKey(b)
	reqs := make([]control.RegisterRequest, b.N)
	for i := range reqs {
		reqs[i] = node.prove(b, fetchChallenge(b, h), control.RegisterRequest{AuthKey: "mvk-x", Hostname: "n"})
	}
	b.ResetTimer()
	for i := range reqs {
		if ok, err := s.checkProof(&reqs[i]); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// TestProofReplayConcurrent: one proven request sent 20 times at once is
// accepted exactly once.
func TestProofReplayConcurrent(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	node := newNodeKey(t)
	mustRegister(t, h, control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: node.pub})
	body, _ := json.Marshal(node.prove(t, fetchChallenge(t, h), control.RegisterRequest{AuthKey: key, Hostname: "n"}))
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, control.PathRegister, bytes.NewReader(body)))
			codes[i] = rec.Code
		})
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case http.StatusOK:
			ok++
		case http.StatusUnauthorized:
		default:
			t.Errorf("status %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 20 copies accepted, want 1: %v", ok, codes)
	}
}

// TestSuspectKeysWarned: nodes stored before keys had to be canonical and
// of large order are named in a warning when the server starts.
func TestSuspectKeysWarned(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := newNodeKey(t).pub
	alias := []byte(good)
	alias[42]++ // a spare bit: same key to a lenient decoder
	for i, pk := range []string{good, string(alias), base64.StdEncoding.EncodeToString(make([]byte, 32))} {
		if _, err := st.db.Exec(`INSERT INTO nodes (name, ip, public_key, credential_hash, created_at) VALUES (?, ?, ?, x'', 0)`,
			[]string{"good", "alias", "zero"}[i], []string{"100.64.0.1", "100.64.0.2", "100.64.0.3"}[i], pk); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	var log bytes.Buffer
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := log.String()
	for _, want := range []string{"name=alias", "name=zero"} {
		if !strings.Contains(out, want) {
			t.Errorf("no warning for %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "name=good") {
		t.Errorf("warning for a good key:\n%s", out)
	}
}

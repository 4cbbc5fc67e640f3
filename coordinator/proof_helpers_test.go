package coordinator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/crypto/curve25519"

	"github.com/meshvpn/meshvpn/control"
)

// nodeKey is a node's key pair, as an agent holds it.
type nodeKey struct {
	priv [32]byte
	pub  string
}

func newNodeKey(t testing.TB) nodeKey {
	t.Helper()
	var k nodeKey
	rand.Read(k.priv[:])
	pub, err := curve25519.X25519(k.priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	k.pub = base64.StdEncoding.EncodeToString(pub)
	return k
}

// prove fills req's challenge and proof as an agent does, with a
// challenge ch from the coordinator.
func (k nodeKey) prove(t testing.TB, ch control.Challenge, req control.RegisterRequest) control.RegisterRequest {
	t.Helper()
	coord, err := base64.StdEncoding.DecodeString(ch.CoordinatorKey)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := curve25519.X25519(k.priv[:], coord)
	if err != nil {
		t.Fatal(err)
	}
	req.PublicKey = k.pub
	req.Challenge = ch.Challenge
	req.Proof = control.RegisterProof(shared, ch.CoordinatorKey, &req)
	return req
}

// fetchChallenge gets a challenge from h.
func fetchChallenge(t testing.TB, h http.Handler) control.Challenge {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, control.PathChallenge, nil))
	var ch control.Challenge
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &ch) != nil {
		t.Fatalf("challenge: %d %s", rec.Code, rec.Body)
	}
	return ch
}

// fetchChallengeHTTP gets a challenge from a running server at base.
func fetchChallengeHTTP(t testing.TB, base string) control.Challenge {
	t.Helper()
	resp, err := http.Get(base + control.PathChallenge)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ch control.Challenge
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ch) != nil {
		t.Fatalf("challenge: HTTP %d", resp.StatusCode)
	}
	return ch
}

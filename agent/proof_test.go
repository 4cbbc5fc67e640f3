package agent

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// fakeCoordinator answers challenges (unless noChallenge) and checks the
// proof of every registration the way the coordinator does.
type fakeCoordinator struct {
	key         Key
	noChallenge bool
	stale       atomic.Int32 // answer this many registrations "stale challenge"
	got         []control.RegisterRequest
	proven      []bool
}

func (f *fakeCoordinator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case control.PathChallenge:
		if f.noChallenge {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(control.Challenge{CoordinatorKey: f.key.Public().String(), Challenge: "ch-" + r.RemoteAddr, ExpiresIn: 60})
	case control.PathRegister:
		var req control.RegisterRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.got = append(f.got, req)
		ok := false
		if pub, err := parseKey(req.PublicKey); err == nil && req.Proof != "" {
			shared, _ := f.key.shared(pub)
			ok = control.VerifyRegisterProof(shared, f.key.Public().String(), &req)
		}
		f.proven = append(f.proven, ok)
		if f.stale.Add(-1) >= 0 {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(control.Error{Error: "registration challenge expired or already used; fetch a new one"})
			return
		}
		json.NewEncoder(w).Encode(control.RegisterResponse{NodeID: 1, Name: "n", IP: "100.64.0.1", Credential: "1.x"})
	}
}

// TestRegisterProvesKey: a registration by auth key carries a valid proof,
// one by credential none; a stale challenge is retried with a fresh one;
// a coordinator without challenges gets the request without proof.
func TestRegisterProvesKey(t *testing.T) {
	coordKey, _ := newPrivateKey()
	priv, _ := newPrivateKey()
	for _, tc := range []struct {
		name        string
		req         control.RegisterRequest
		noChallenge bool
		stale       int32
		wantProven  []bool
	}{
		{"auth key", control.RegisterRequest{AuthKey: "mvk-1", Hostname: "n"}, false, 0, []bool{true}},
		{"stale challenge retried", control.RegisterRequest{AuthKey: "mvk-1", Hostname: "n"}, false, 2, []bool{true, true, true}},
		{"credential", control.RegisterRequest{Credential: "1.x", Hostname: "n"}, false, 0, []bool{false}},
		{"old coordinator", control.RegisterRequest{AuthKey: "mvk-1", Hostname: "n"}, true, 0, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCoordinator{key: coordKey, noChallenge: tc.noChallenge}
			f.stale.Store(tc.stale)
			srv := httptest.NewServer(f)
			defer srv.Close()
			c, err := newControlClient([]string{srv.URL}, "", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			c.priv = priv
			tc.req.PublicKey = priv.Public().String()
			if _, err := c.register(t.Context(), tc.req); err != nil {
				t.Fatal(err)
			}
			if len(f.proven) != len(tc.wantProven) {
				t.Fatalf("%d registrations, want %d", len(f.proven), len(tc.wantProven))
			}
			for i, p := range f.proven {
				if p != tc.wantProven[i] {
					t.Errorf("registration %d proven=%v, want %v (%+v)", i, p, tc.wantProven[i], f.got[i])
				}
			}
		})
	}
}

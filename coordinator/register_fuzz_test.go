package coordinator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// FuzzRegisterRequest feeds arbitrary bodies to the register handler: it must
// never panic and must answer 2xx or 4xx, never 5xx.
func FuzzRegisterRequest(f *testing.F) {
	s := newTestServer(f)
	// Every fuzz input comes from one address; the failure limit would
	// answer most of them 429 before decoding anything.
	s.limiter = newAuthLimiter(-1, 1)
	key := newKey(f, s.store, true, 0)
	single := newKey(f, s.store, false, 0)
	pk := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	h := s.Handler()
	seedKey := newPublicKey(f)
	seed := mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "seed", PublicKey: seedKey})

	f.Add([]byte(`{"auth_key":"` + key + `","hostname":"a","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"auth_key":"` + single + `","hostname":"Über Host!","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"credential":"` + seed.Credential + `","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"credential":"1.x","auth_key":"` + key + `","public_key":"` + pk + `"}`))
	gone := mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "gone", PublicKey: newPublicKey(f)})
	if _, err := s.RemoveNode(f.Context(), "gone"); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"credential":"` + gone.Credential + `","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"credential":"` + gone.Credential + `","auth_key":"` + key + `","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"auth_key":"mvk-x","public_key":"` + pk + `"}`))
	proven := newNodeKey(f).prove(f, fetchChallenge(f, h), control.RegisterRequest{AuthKey: key, Hostname: "p"})
	pb, _ := json.Marshal(proven)
	f.Add(pb)
	f.Add([]byte(`{"auth_key":"` + key + `","public_key":"` + seedKey + `","challenge":"` + proven.Challenge + `","proof":"` + proven.Proof + `"}`))
	f.Add([]byte(`{"auth_key":"` + key + `","public_key":"` + seedKey + `","challenge":"x"}`))
	f.Add([]byte(`{"hostname":null}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`{"auth_key":"` + key + `"} trailing`))
	f.Add([]byte{0xff, 0xfe, 0x00})
	f.Add([]byte(``))

	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, control.PathRegister, bytes.NewReader(body)))
		if rec.Code >= 500 || rec.Code < 200 || (rec.Code >= 300 && rec.Code < 400) {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}

// FuzzStreamAuth feeds arbitrary credentials and public key headers to the
// stream endpoint: without a valid pair it must answer 4xx before any
// upgrade, and never 5xx.
func FuzzStreamAuth(f *testing.F) {
	s := newTestServer(f)
	s.limiter = newAuthLimiter(-1, 1)
	key := newKey(f, s.store, true, 0)
	h := s.Handler()
	pk := newPublicKey(f)
	ok := mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "ok", PublicKey: pk})
	gone := mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "gone", PublicKey: newPublicKey(f)})
	if _, err := s.RemoveNode(f.Context(), "gone"); err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer "+ok.Credential, newPublicKey(f))
	f.Add("Bearer "+gone.Credential, "")
	f.Add("Bearer "+ok.Credential+"x", pk)
	f.Add("bearer  1.", "")
	f.Add("Basic abc", pk)
	f.Add("Bearer 18446744073709551616.x", "")
	f.Add("", "")

	f.Fuzz(func(t *testing.T, auth, pub string) {
		if auth == "Bearer "+ok.Credential && (pub == "" || pub == pk) {
			return // the one valid pair would open a real stream
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, control.PathStream+"?v=1", nil)
		req.Header.Set("Authorization", auth)
		req.Header.Set(control.HeaderPublicKey, pub)
		h.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("status %d for %q / %q: %s", rec.Code, auth, pub, rec.Body)
		}
	})
}

// FuzzRegisterProof mutates the fields of a proven re-admission of an
// existing node. Only the honest request may get the node's identity
// back: any other combination must be refused with 4xx (never 5xx, never a
// credential for that public key).
func FuzzRegisterProof(f *testing.F) {
	s := newTestServer(f)
	s.limiter = newAuthLimiter(-1, 1)
	h := s.Handler()
	key := newKey(f, s.store, true, 0)
	victim := newNodeKey(f)
	mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "victim", PublicKey: victim.pub})
	honest := victim.prove(f, fetchChallenge(f, h), control.RegisterRequest{AuthKey: key, Hostname: "victim"})
	other := newNodeKey(f).prove(f, fetchChallenge(f, h), control.RegisterRequest{AuthKey: key, Hostname: "victim"})

	f.Add(honest.PublicKey, honest.Challenge, honest.Proof, honest.AuthKey, "evil")
	f.Add(honest.PublicKey, other.Challenge, honest.Proof, honest.AuthKey, honest.Hostname)
	f.Add(honest.PublicKey, honest.Challenge, other.Proof, honest.AuthKey, honest.Hostname)
	f.Add(honest.PublicKey, honest.Challenge[:20], honest.Proof, honest.AuthKey, honest.Hostname)
	f.Add(honest.PublicKey, honest.Challenge, honest.Proof[:43]+"A", honest.AuthKey, honest.Hostname)
	f.Add(honest.PublicKey, "", "", honest.AuthKey, honest.Hostname)
	f.Add(honest.PublicKey, honest.Challenge, "", honest.AuthKey, honest.Hostname)
	f.Add(other.PublicKey, other.Challenge, other.Proof, key+"x", honest.Hostname)
	f.Add(honest.PublicKey[:42]+"B=", honest.Challenge, honest.Proof, honest.AuthKey, honest.Hostname)

	f.Fuzz(func(t *testing.T, pub, challenge, proof, authKey, hostname string) {
		req := control.RegisterRequest{AuthKey: authKey, Hostname: hostname, PublicKey: pub, Challenge: challenge, Proof: proof}
		if req == honest {
			return
		}
		body, _ := json.Marshal(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, control.PathRegister, bytes.NewReader(body)))
		if rec.Code >= 500 {
			t.Fatalf("status %d for %+v: %s", rec.Code, req, rec.Body)
		}
		if rec.Code == http.StatusOK && pub == victim.pub {
			t.Fatalf("took over the victim with %+v: %s", req, rec.Body)
		}
	})
}

package coordinator

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// FuzzRegisterRequest feeds arbitrary bodies to the register handler: it must
// never panic and must answer 2xx or 4xx, never 5xx.
func FuzzRegisterRequest(f *testing.F) {
	s := newTestServer(f)
	key := newKey(f, s.store, true, 0)
	single := newKey(f, s.store, false, 0)
	pk := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	h := s.Handler()
	seed := mustRegister(f, h, control.RegisterRequest{AuthKey: key, Hostname: "seed", PublicKey: newPublicKey(f)})

	f.Add([]byte(`{"auth_key":"` + key + `","hostname":"a","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"auth_key":"` + single + `","hostname":"Über Host!","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"credential":"` + seed.Credential + `","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"credential":"1.x","auth_key":"` + key + `","public_key":"` + pk + `"}`))
	f.Add([]byte(`{"auth_key":"mvk-x","public_key":"` + pk + `"}`))
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

package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// TestStreamRefusals checks that the control client recognises the
// coordinator's definitive refusals (a 401 on the stream request, the
// removed/expired close codes) and reports them with the reason, while an
// ordinary close is just a lost stream.
func TestStreamRefusals(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		refused string // "" = not a refusal
	}{
		{"401", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"node expired"}`))
		}, "node expired"},
		{"removed", closeWith(control.CloseNodeRemoved, control.ReasonNodeRemoved), "node removed"},
		{"expired", closeWith(control.CloseNodeExpired, control.ReasonNodeExpired), "node expired"},
		{"going-away", closeWith(websocket.StatusGoingAway, "coordinator shutting down"), ""},
		{"503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gotKey string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotKey = r.Header.Get(control.HeaderPublicKey)
				tc.handler(w, r)
			}))
			defer srv.Close()
			c, err := newControlClient([]string{srv.URL}, "", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			c.pubKey = "PUB"
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = c.streamOnce(ctx, "1.secret", func(control.Message) {})
			if err == nil {
				t.Fatal("stream ended without an error")
			}
			var refused *refusedError
			isRefused := errors.As(err, &refused)
			if tc.refused == "" {
				if isRefused {
					t.Fatalf("%v counted as a refusal", err)
				}
				return
			}
			if !isRefused || refused.msg != tc.refused || !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("got %v, want a refusal %q", err, tc.refused)
			}
			if gotKey != "PUB" {
				t.Fatalf("public key header %q", gotKey)
			}
		})
	}
}

func closeWith(code websocket.StatusCode, reason string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.Close(code, reason)
	}
}

package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestServer makes a server on a fresh state dir without sockets.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startServer runs a server on loopback with STUN and returns it and the
// API base URL. The server is shut down at the end of the test.
func startServer(t testing.TB, dir string, opts ...func(*Server)) (*Server, string) {
	t.Helper()
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: dir, STUNListen: "127.0.0.1:0", Logger: testLogger(t)}, opts...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, "http://" + s.HTTPAddr().String()
}

// runServer starts a server with cfg and returns it with a function that
// shuts it down and returns what Serve returned, for tests that stop the
// server themselves.
func runServer(t testing.TB, cfg Config, opts ...func(*Server)) (*Server, func() error) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(s)
	}
	if err := s.Listen(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return s, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("serve did not return after cancel")
		}
	}
}

func newPublicKey(t testing.TB) string {
	t.Helper()
	var b [32]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

func newKey(t testing.TB, st *Store, reusable bool, expiry time.Duration) string {
	t.Helper()
	k, err := st.CreateAuthKey(context.Background(), reusable, expiry)
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

// postRegister sends a register request to h and decodes the answer.
func postRegister(t testing.TB, h http.Handler, body []byte) (int, control.RegisterResponse, control.Error) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, control.PathRegister, bytes.NewReader(body)))
	var ok control.RegisterResponse
	var e control.Error
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &ok); err != nil {
			t.Fatalf("decode response %q: %v", rec.Body, err)
		}
	} else if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("status %d with body %q: want a control.Error", rec.Code, rec.Body)
	}
	return rec.Code, ok, e
}

func register(t testing.TB, h http.Handler, req control.RegisterRequest) (int, control.RegisterResponse, control.Error) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return postRegister(t, h, body)
}

// mustRegister registers and fails the test unless it succeeds.
func mustRegister(t testing.TB, h http.Handler, req control.RegisterRequest) control.RegisterResponse {
	t.Helper()
	code, resp, e := register(t, h, req)
	if code != http.StatusOK {
		t.Fatalf("register %+v: status %d: %s", req.Hostname, code, e.Error)
	}
	return resp
}

// newRecorder sends a register request from remote to h.
func newRecorder(h http.Handler, remote, body string) *http.Response {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, control.PathRegister, bytes.NewReader([]byte(body)))
	req.RemoteAddr = remote
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	return rec.Result()
}

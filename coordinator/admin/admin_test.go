package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSocketRoundTrip serves a handler on the socket Listen binds and
// calls it with a Client: JSON answers decode, an error body comes back as
// the error, and the socket is private to its owner.
func TestSocketRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, Socket))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathRename, func(w http.ResponseWriter, r *http.Request) {
		var req Request
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(map[string]string{"name": req.Name})
	})
	mux.HandleFunc("POST "+PathRemove, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"node x not found"}`))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	ctx := context.Background()
	c, err := Dial(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Name string }
	if err := c.Call(ctx, PathRename, Request{Node: "a", Name: "b"}, &out); err != nil || out.Name != "b" {
		t.Fatalf("rename: %+v, %v", out, err)
	}
	if err := c.Call(ctx, PathRemove, Request{Node: "x"}, &out); err == nil || err.Error() != "node x not found" {
		t.Fatalf("remove: %v, want the server's message", err)
	}
	if _, err := c.Raw(ctx, http.MethodGet, "/nowhere", nil, 100); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("unknown path: %v, want 404", err)
	}
}

func TestListenPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	if _, err := Listen(dir); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("Listen in a long path: %v, want 'too long'", err)
	}
}

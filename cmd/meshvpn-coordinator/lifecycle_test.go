package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

// TestNodeCommands drives nodes remove|expire|rename and authkey
// list|revoke, first on a store with no server (direct writes), then with
// a server running (through its admin socket).
func TestNodeCommands(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "authkey", "create", "--reusable", "--ephemeral", "--tag", "web", "--tag", "tag:prod", "--json", "--state", dir)
	if code != 0 {
		t.Fatalf("authkey create: %d %s", code, errOut)
	}
	var k struct {
		ID        int64    `json:"id"`
		Key       string   `json:"key"`
		Ephemeral bool     `json:"ephemeral"`
		Tags      []string `json:"tags"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &k); err != nil || !k.Ephemeral || strings.Join(k.Tags, ",") != "tag:prod,web" {
		t.Fatalf("create --json: %q %v", out, err)
	}
	st, err := coordinator.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range []string{"one", "two", "three"} {
		pk := strings.Repeat("A", 42) + string(rune('B'+i)) + "="
		if _, err := st.Register(context.Background(), control.RegisterRequest{AuthKey: k.Key, Hostname: h, PublicKey: pk}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	// No server: the store is changed directly.
	code, out, errOut = runCLI(t, "nodes", "rename", "one", "web-1", "--json", "--state", dir)
	var r struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
		Via  string   `json:"via"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Name != "web-1" || r.Via != "store" || len(r.Tags) != 2 {
		t.Fatalf("rename: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "nodes", "expire", "--state", dir, "two")
	if code != 0 || !strings.Contains(out, "expired node") {
		t.Fatalf("expire: %d %q %q", code, out, errOut)
	}

	// With a server: through the admin socket.
	srv, err := coordinator.New(coordinator.Config{Listen: "127.0.0.1:0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	code, out, errOut = runCLI(t, "nodes", "remove", "three", "--json", "--state", dir)
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Via != "server" {
		t.Fatalf("remove via server: %d %q %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "nodes", "remove", "three", "--state", dir)
	if code != 1 || !strings.Contains(errOut, "no such node") {
		t.Fatalf("remove twice: %d %q", code, errOut)
	}

	code, out, _ = runCLI(t, "nodes", "list", "--json", "--state", dir)
	var nodes []struct {
		Name      string   `json:"name"`
		Tags      []string `json:"tags"`
		Ephemeral bool     `json:"ephemeral"`
		Expired   bool     `json:"expired"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil || len(nodes) != 2 {
		t.Fatalf("list: %d %q", code, out)
	}
	if nodes[0].Name != "web-1" || nodes[0].Expired || !nodes[1].Expired || !nodes[0].Ephemeral || len(nodes[1].Tags) != 2 {
		t.Fatalf("list: %+v", nodes)
	}
	code, out, _ = runCLI(t, "nodes", "list", "--state", dir)
	if code != 0 || !strings.Contains(out, "tag:prod,web") || !strings.Contains(out, "ephemeral,expired") {
		t.Fatalf("list table:\n%s", out)
	}

	code, out, _ = runCLI(t, "authkey", "revoke", "1", "--state", dir)
	if code != 0 || !strings.Contains(out, "revoked auth key 1") {
		t.Fatalf("revoke: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "authkey", "list", "--json", "--state", dir)
	var keys []struct {
		ID    int64  `json:"id"`
		Uses  int64  `json:"uses"`
		State string `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &keys) != nil || len(keys) != 1 || keys[0].Uses != 3 || keys[0].State != "revoked" {
		t.Fatalf("authkey list: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "authkey", "list", "--state", dir)
	if code != 0 || !strings.Contains(out, "reusable,ephemeral") || !strings.Contains(out, "revoked") {
		t.Fatalf("authkey list table:\n%s", out)
	}
}

func TestLifecycleUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"nodes", "remove", "--state", dir},
		{"nodes", "remove", "a", "b", "--state", dir},
		{"nodes", "rename", "a", "--state", dir},
		{"nodes", "expire", "--bogus", "a"},
		{"authkey", "revoke", "--state", dir},
		{"authkey", "revoke", "abc", "--state", dir},
		{"authkey", "create", "--tag", "UPPER", "--state", dir},
		{"authkey", "create", "--tag", "", "--state", dir},
		{"serve", "--ephemeral-timeout", "0", "--state", dir},
		{"serve", "--auth-fail-burst", "0", "--state", dir},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != 2 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q, want 2 and a message", args, code, errOut)
		}
	}
	// Unknown nodes and keys are failures (exit 1) that say so.
	if code, _, errOut := runCLI(t, "authkey", "create", "--state", dir); code != 0 {
		t.Fatalf("authkey create: exit %d: %q", code, errOut)
	}
	for _, args := range [][]string{
		{"nodes", "remove", "ghost", "--state", dir},
		{"nodes", "expire", "100.64.9.9", "--state", dir},
		{"authkey", "revoke", "42", "--state", dir},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != 1 || !strings.Contains(errOut, "no such") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
	for _, args := range [][]string{{"nodes", "remove", "--help"}, {"nodes", "rename", "-h"}, {"authkey", "list", "--help"}, {"authkey", "revoke", "--help"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "usage") || !strings.Contains(out, "-json") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
}

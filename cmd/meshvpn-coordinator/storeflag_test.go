package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// TestStoreFlagPostgres drives the admin commands with --store (and
// --store-file, MESHVPN_STORE) against a throwaway PostgreSQL, with no
// server running: they must change the database, never a SQLite file in
// --state.
func TestStoreFlagPostgres(t *testing.T) {
	c := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := c.NewDB(t)
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "authkey", "create", "--reusable", "--state", dir, "--store", url)
	if code != 0 {
		t.Fatalf("authkey create --store: %d %s", code, errOut)
	}
	st, err := coordinator.OpenStoreAt("", url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Register(context.Background(), control.RegisterRequest{AuthKey: lastLine(out), Hostname: "one", PublicKey: strings.Repeat("A", 42) + "B="}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	file := filepath.Join(t.TempDir(), "store-url")
	if err := os.WriteFile(file, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "nodes", "rename", "one", "web-1", "--state", dir, "--store-file", file); code != 0 {
		t.Fatalf("nodes rename --store-file: %d %s %s", code, out, errOut)
	}
	t.Setenv("MESHVPN_STORE", url)
	if code, out, errOut := runCLI(t, "nodes", "list", "--json", "--state", dir); code != 0 || !strings.Contains(out, `"web-1"`) {
		t.Fatalf("nodes list with MESHVPN_STORE: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, coordinator.DBFile)); !os.IsNotExist(err) {
		t.Fatalf("a SQLite store appeared in --state (stat: %v)", err)
	}
}

// TestStoreFlagBad: a --store that is no PostgreSQL URL, or one that
// cannot be reached, is a clear error and a non-zero exit, and never shows
// the URL's password.
func TestStoreFlagBad(t *testing.T) {
	dir := t.TempDir()
	for _, store := range []string{
		"mysql://root:hunter2@db/x",
		"postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2",
		"postgres://u:hunter2@[::1/db",
	} {
		code, out, errOut := runCLI(t, "authkey", "list", "--state", dir, "--store", store)
		if code == 0 || errOut == "" {
			t.Errorf("--store %q: exit %d, stderr %q", store, code, errOut)
		}
		if strings.Contains(out+errOut, "hunter2") {
			t.Errorf("--store %q: password in the output: %s", store, errOut)
		}
		t.Logf("--store %q: %s", store, strings.TrimSpace(errOut))
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandsNeedState: a command that reads or changes what a coordinator
// holds, pointed at a directory with no coordinator in it (a mistyped
// --state), says so and exits 1. Before, it created an empty store there
// and printed an empty mesh, as if the real one had no nodes.
func TestCommandsNeedState(t *testing.T) {
	for _, args := range [][]string{
		{"nodes", "list"},
		{"nodes", "list", "--json"},
		{"nodes", "remove", "web-1"},
		{"nodes", "rename", "web-1", "web-2"},
		{"nodes", "expire", "web-1"},
		{"authkey", "list"},
		{"authkey", "revoke", "1"},
		{"policy", "get"},
		{"usage"},
	} {
		dir := filepath.Join(t.TempDir(), "typo")
		code, out, errOut := runCLI(t, append(args, "--state", dir)...)
		if code != 1 || !strings.Contains(errOut, "no coordinator state in "+dir) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 naming the missing state", args, code, out, errOut)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%q: made %s (stat: %v); want nothing created", args, dir, err)
		}
	}
	// Making keys or a policy before the first serve stays possible.
	dir := t.TempDir()
	if code, _, errOut := runCLI(t, "authkey", "create", "--state", dir); code != 0 {
		t.Fatalf("authkey create on a new state: exit %d: %q", code, errOut)
	}
	if code, out, errOut := runCLI(t, "nodes", "list", "--state", dir); code != 0 || !strings.Contains(out, "NAME") {
		t.Errorf("nodes list after the state exists: exit %d, %q %q", code, out, errOut)
	}
}

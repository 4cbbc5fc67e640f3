package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/coordinator"
)

const goodPolicy = `{
  // laptop may ssh to servers
  "acls": [{"action": "accept", "src": ["laptop"], "dst": ["tag:server:22"]},],
}
`

// testPolicyCommands runs check, set and get against dir, with or without
// a server holding it.
func testPolicyCommands(t *testing.T, dir string) {
	files := t.TempDir()
	good := filepath.Join(files, "good.hujson")
	bad := filepath.Join(files, "bad.hujson")
	os.WriteFile(good, []byte(goodPolicy), 0o600)
	os.WriteFile(bad, []byte("{\n  \"acls\": [],\n  \"tagOwners\": {},\n}"), 0o600)

	code, _, errOut := runCLI(t, "policy", "get", "--state", dir)
	if code != 0 || !strings.Contains(errOut, "no policy set") {
		t.Fatalf("get with none: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "policy", "check", bad, "--state", dir)
	if code != 1 || !strings.Contains(errOut, `line 3, column 3: unknown section "tagOwners"`) {
		t.Fatalf("check bad: exit %d: %q", code, errOut)
	}
	code, out, errOut := runCLI(t, "policy", "check", good, "--state", dir)
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("check good: exit %d: %q", code, errOut)
	}
	if code, _, errOut = runCLI(t, "policy", "set", good, "--state", dir); code != 0 {
		t.Fatalf("set good: exit %d: %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "policy", "set", bad, "--state", dir)
	if code != 1 || !strings.Contains(errOut, "tagOwners") {
		t.Fatalf("set bad: exit %d: %q", code, errOut)
	}
	code, out, _ = runCLI(t, "policy", "get", "--state", dir)
	if code != 0 || out != goodPolicy {
		t.Fatalf("get after a refused set: %d %q", code, out)
	}
	if code, out, _ = runCLI(t, "policy", "clear", "--state", dir); code != 0 || !strings.Contains(out, "cleared") {
		t.Fatalf("clear: %d %q", code, out)
	}
	if code, _, errOut = runCLI(t, "policy", "get", "--state", dir); code != 0 || !strings.Contains(errOut, "no policy set") {
		t.Fatalf("get after clear: %d %q", code, errOut)
	}
	if code, _, _ = runCLI(t, "policy", "set", filepath.Join(files, "missing"), "--state", dir); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	if code, _, _ = runCLI(t, "policy", "set", "--state", dir); code != 2 {
		t.Fatalf("no file: exit %d", code)
	}
}

func TestPolicyCommandsOffline(t *testing.T) {
	dir := t.TempDir()
	// "policy set" may make the state (a policy before the first serve);
	// "policy get" may not, so the state is made first.
	if code, _, errOut := runCLI(t, "policy", "clear", "--state", dir); code != 0 {
		t.Fatalf("policy clear on a new state: exit %d: %q", code, errOut)
	}
	testPolicyCommands(t, dir)
}

func TestPolicyCommandsWhileServing(t *testing.T) {
	dir := t.TempDir()
	serveDuringTest(t, dir)
	testPolicyCommands(t, dir)
}

// serveDuringTest runs a coordinator on dir until the test ends.
func serveDuringTest(t *testing.T, dir string) {
	serveConfigDuringTest(t, coordinator.Config{Listen: "127.0.0.1:0", StateDir: dir})
}

// serveConfigDuringTest runs a coordinator with cfg until the test ends.
func serveConfigDuringTest(t *testing.T, cfg coordinator.Config) *coordinator.Server {
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	srv, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestAuthKeyWhileServing creates keys with the CLI while a server holds the
// same store open, then registers with them and lists the nodes.
func TestAuthKeyWhileServing(t *testing.T) {
	dir := t.TempDir()
	srv, err := coordinator.New(coordinator.Config{
		Listen:   "127.0.0.1:0",
		StateDir: dir,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
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
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://" + srv.HTTPAddr().String()

	code, out, errOut := runCLI(t, "authkey", "create", "--state", dir)
	if code != 0 {
		t.Fatalf("authkey create: exit %d: %s", code, errOut)
	}
	key := lastLine(out)
	if !strings.HasPrefix(key, coordinator.AuthKeyPrefix) {
		t.Fatalf("last line %q is not a key", key)
	}
	if strings.Contains(errOut, key) {
		t.Fatal("key printed to stderr")
	}

	code, out, errOut = runCLI(t, "authkey", "create", "--json", "--expiry", "0", "--state", dir, "--reusable")
	if code != 0 {
		t.Fatalf("authkey create --json: exit %d: %s", code, errOut)
	}
	var k struct {
		Key       string     `json:"key"`
		Reusable  bool       `json:"reusable"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &k); err != nil || !k.Reusable || k.ExpiresAt != nil || k.Key == "" {
		t.Fatalf("json output %q: %+v %v", out, k, err)
	}

	for i, key := range []string{key, k.Key} {
		body, _ := json.Marshal(control.RegisterRequest{AuthKey: key, Hostname: "host", PublicKey: strings.Repeat("A", 41) + string(rune('E'+i)) + "E="})
		resp, err := http.Post(base+control.PathRegister, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("register with CLI key %d: status %d", i, resp.StatusCode)
		}
	}

	code, out, errOut = runCLI(t, "nodes", "list", "--json", "--state", dir)
	if code != 0 {
		t.Fatalf("nodes list: exit %d: %s", code, errOut)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatalf("nodes list --json: %v: %s", err, out)
	}
	if len(nodes) != 2 || nodes[0]["name"] != "host" || nodes[1]["name"] != "host-2" || nodes[0]["ip"] != "100.64.0.1" {
		t.Fatalf("nodes: %v", nodes)
	}
	for _, want := range []string{"id", "name", "ip", "public_key", "online", "last_seen"} {
		if _, ok := nodes[0][want]; !ok {
			t.Errorf("nodes list --json lacks %q", want)
		}
	}

	code, out, _ = runCLI(t, "nodes", "list", "--state", dir)
	if code != 0 || !strings.Contains(out, "host-2") || !strings.Contains(out, "100.64.0.2") || !strings.Contains(out, "LAST SEEN") {
		t.Fatalf("nodes list table: exit %d:\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := [][]string{
		{},
		{"bogus"},
		{"authkey"},
		{"authkey", "delete"},
		{"authkey", "create", "--expiry", "soon", "--state", dir},
		{"authkey", "create", "--expiry", "-1h", "--state", dir},
		{"authkey", "create", "extra", "--state", dir},
		{"nodes", "list", "--nope"},
		{"serve", "--tls-cert", "x.pem"},
		{"serve", "--log-level", "loud"},
		{"serve", "--relay-range", "60000-50000"},
		{"serve", "--relay-range", "lots"},
		{"serve", "--turn-allow-peer", "10.0.0.0"},
		{"serve", "--turn-url", "turn:relay.example.com"},
		{"serve", "--turn-secret", "s", "--turn-secret-file", "f", "--turn-url", "turn:x"},
		{"serve", "--turn-username", "u", "--turn-url", "turn:x"},
		{"serve", "--turn-secret", "s"},
		{"serve", "--ip-holdback", "-1h"},
		{"serve", "--dns-domain", "bad_domain.internal"},
		{"serve", "--dns-domain", "mesh.local"},
		{"serve", "--turn-username", "u", "--turn-password", "p", "--turn-password-file", "f", "--turn-url", "turn:x"},
	}
	for _, args := range cases {
		code, out, errOut := runCLI(t, args...)
		if code != 2 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q, want exit 2 and a message", args, code, errOut)
		}
		if strings.Contains(out, coordinator.AuthKeyPrefix) {
			t.Errorf("%q created a key", args)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"serve", "--help"}, {"authkey", "--help"},
		{"authkey", "create", "-h"}, {"nodes", "list", "--help"},
	} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "usage") && !strings.Contains(out, "Usage") {
			t.Errorf("%q: exit %d, stdout %q", args, code, out)
		}
	}
	_, out, _ := runCLI(t, "serve", "--help")
	for _, flag := range []string{"-listen", "-state", "-tls-cert", "-tls-key", "-stun-listen", "-stun-alt-listen", "-public-host",
		"-embedded-turn", "-turn-listen", "-turns-listen", "-turn-public-ip", "-relay-range", "-turn-allow-peer", "-turn-url",
		"-turn-secret-file", "-turn-username", "-turn-password-file", "-turn-ca", "-turn-credential-ttl", "-ip-holdback"} {
		if !strings.Contains(out, flag) {
			t.Errorf("serve --help does not explain %s", flag)
		}
	}
}

func TestServeBadConfig(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "serve", "--state", dir, "--listen", "127.0.0.1:0", "--tls-cert", dir+"/no.pem", "--tls-key", dir+"/no.key")
	if code != 1 || !strings.Contains(errOut, "TLS") {
		t.Fatalf("missing cert: exit %d, %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "serve", "--state", dir, "--listen", "not an address", "--stun-listen", "")
	if code != 1 || errOut == "" {
		t.Fatalf("bad listen: exit %d, %q", code, errOut)
	}
	// Relay settings that can only be judged when starting.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--turn-url", "stun:x:3478", "--turn-secret", "s"}, "turn url"},
		{[]string{"--turns-listen", "127.0.0.1:0"}, "TLS listener needs"},
		{[]string{"--turn-public-ip", "not-an-ip"}, "turn public ip"},
		{[]string{"--turn-ca", dir + "/missing.pem"}, "turn ca file"},
	} {
		args := append([]string{"serve", "--state", dir, "--listen", "127.0.0.1:0", "--stun-listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0"}, c.args...)
		code, _, errOut = runCLI(t, args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, %q; want 1 and %q", c.args, code, errOut, c.want)
		}
	}
	// netcheck's alternate STUN address: another IP needs specific IPs on
	// both, and no alternate without a primary.
	for _, c := range []struct{ stun, alt, want string }{
		{":0", "127.0.0.2:0", "both need a specific IP"},
		{"", ":3479", "needs a primary STUN address"},
		{"127.0.0.1:0", "127.0.0.1:nope", "stun alternate address"},
	} {
		code, _, errOut = runCLI(t, "serve", "--state", dir, "--listen", "127.0.0.1:0", "--stun-listen", c.stun, "--stun-alt-listen", c.alt)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("--stun-listen %q --stun-alt-listen %q: exit %d, %q; want 1 and %q", c.stun, c.alt, code, errOut, c.want)
		}
	}
}

// TestSecretFlagsWarn: relay secrets on the command line work but warn
// (ps shows them), without the secret in the log; the file forms do not.
func TestSecretFlagsWarn(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("sekrit-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--turn-secret", "sekrit-1"}, true},
		{[]string{"--turn-username", "u", "--turn-password", "sekrit-2"}, true},
		{[]string{"--turn-username", "u", "--turn-password-file", file}, false},
		{[]string{"--turn-secret-file", file}, false},
	} {
		// A bad listen address stops serve after the flags are read.
		args := append([]string{"serve", "--state", dir, "--listen", "not an address", "--stun-listen", "", "--embedded-turn=false",
			"--turn-url", "turn:relay.example.com:3478?transport=udp"}, c.args...)
		code, _, errOut := runCLI(t, args...)
		if code != 1 {
			t.Errorf("%q: exit %d, %q; want 1 (bad listen address)", c.args, code, errOut)
		}
		if warned := strings.Contains(errOut, "visible to every user"); warned != c.warn {
			t.Errorf("%q: warned %v, want %v: %s", c.args, warned, c.warn, errOut)
		}
		if strings.Contains(errOut, "sekrit") {
			t.Errorf("%q: a secret is in the output: %s", c.args, errOut)
		}
	}
}

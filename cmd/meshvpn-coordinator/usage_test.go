package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

func TestUsageCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"usage", "--since", "soon", "--state", dir},
		{"usage", "--since", "-5m", "--state", dir},
		{"usage", "--since", "48h", "--state", dir},
		{"usage", "extra", "--state", dir},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q, want exit 2 and a message", args, code, errOut)
		}
	}
	// Usage lives in the server's memory: without one there is none.
	if code, _, errOut := runCLI(t, "authkey", "create", "--state", dir); code != 0 {
		t.Fatalf("authkey create: exit %d: %q", code, errOut)
	}
	code, _, errOut := runCLI(t, "usage", "--state", dir)
	if code != 1 || !strings.Contains(errOut, "no coordinator is running") {
		t.Errorf("usage with no server: exit %d, stderr %q", code, errOut)
	}
}

// TestUsageCommandExternalRelay: an external TURN server reports nothing,
// so its rows say n/a (null in JSON), never 0.
func TestUsageCommandExternalRelay(t *testing.T) {
	dir := t.TempDir()
	srv := serveConfigDuringTest(t, coordinator.Config{Listen: "127.0.0.1:0", StateDir: dir,
		TURN: coordinator.TURNConfig{URLs: []string{"turn:relay.example.com:3478"}, Secret: "s3cret"}})
	code, out, errOut := runCLI(t, "authkey", "create", "--state", dir)
	if code != 0 {
		t.Fatalf("authkey create: exit %d: %s", code, errOut)
	}
	body, _ := json.Marshal(control.RegisterRequest{AuthKey: lastLine(out), Hostname: "host", PublicKey: strings.Repeat("A", 42) + "E="})
	resp, err := http.Post("http://"+srv.HTTPAddr().String()+control.PathRegister, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	code, out, errOut = runCLI(t, "usage", "--state", dir)
	if code != 0 || !strings.Contains(out, "host") || !strings.Contains(out, "turn:relay.example.com:3478") ||
		strings.Count(out, "n/a") != 4 || strings.Contains(out, " 0 ") {
		t.Fatalf("usage table: exit %d %s:\n%s", code, errOut, out)
	}
	code, out, errOut = runCLI(t, "usage", "--json", "--since", "10m", "--state", dir)
	if code != 0 {
		t.Fatalf("usage --json: exit %d: %s", code, errOut)
	}
	var rep struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Rows) != 1 {
		t.Fatalf("usage --json %v:\n%s", err, out)
	}
	r := rep.Rows[0]
	if r["node"] != "host" || r["reported"] != false || r["bytes_in"] != nil || r["packets_out"] != nil {
		t.Errorf("external relay row %v: want unreported, null counts", r)
	}
	for _, k := range []string{"bytes_in", "packets_in", "bytes_out", "packets_out"} {
		if _, ok := r[k]; !ok {
			t.Errorf("row lacks %q", k)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuthKeyOnCommandLineWarns: --authkey works but warns (the value is
// in ps), without logging the key; the file form does not warn; both
// together are refused.
func TestAuthKeyOnCommandLineWarns(t *testing.T) {
	file := filepath.Join(t.TempDir(), "authkey")
	if err := os.WriteFile(file, []byte("mvk-sekrit-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		warn bool
		want string
	}{
		{[]string{"--authkey", "mvk-sekrit-1"}, true, "scheme must be http or https"},
		{[]string{"--authkey-file", file}, false, "scheme must be http or https"},
		{[]string{"--authkey", "mvk-sekrit-1", "--authkey-file", file}, false, "not both"},
	} {
		var stdout, stderr bytes.Buffer
		// A bad coordinator URL stops `up` before it needs root.
		code := run(append([]string{"up", "--coordinator", "gopher://x"}, c.args...), &stdout, &stderr)
		out := stderr.String()
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%q: exit %d, %q; want 1 and %q", c.args, code, out, c.want)
		}
		if warned := strings.Contains(out, "visible to every user"); warned != c.warn {
			t.Errorf("%q: warned %v, want %v: %s", c.args, warned, c.warn, out)
		}
		if strings.Contains(out, "sekrit") {
			t.Errorf("%q: the auth key is in the output: %s", c.args, out)
		}
	}
}

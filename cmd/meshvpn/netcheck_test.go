package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestNetcheckBadInput(t *testing.T) {
	t.Setenv("MESHVPN_COORDINATOR", "")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"netcheck"}, 1, "--coordinator URL"},
		{[]string{"netcheck", "--coordinator", "gopher://x"}, 1, "scheme must be http or https"},
		{[]string{"netcheck", "--coordinator", "http://127.0.0.1:1"}, 1, "ask coordinator for STUN servers"},
		{[]string{"netcheck", "--stun", "127.0.0.1:3478", "--timeout", "0s"}, 1, "--timeout must be positive"},
		{[]string{"netcheck", "--stun", "127.0.0.1:3478", "extra"}, 1, `unexpected argument "extra"`},
		{[]string{"netcheck", "--bogus"}, 2, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}

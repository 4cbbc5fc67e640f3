package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestLazyFlagsBadInput: bad --lazy-peers / --lazy-idle values end `up`
// with a clear error before anything is created.
func TestLazyFlagsBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--lazy-peers", "sometimes"}, `--lazy-peers "sometimes": want auto, on or off`},
		{[]string{"up", "--lazy-idle", "10ms"}, "--lazy-idle 10ms: want at least 1s"},
		{[]string{"up", "--lazy-idle", "-1m"}, "--lazy-idle -1m0s: want at least 1s"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}

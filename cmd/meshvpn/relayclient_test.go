package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRelayClientFlag: an unknown --relay-client mode stops `up` with a
// clear error before it needs root, without echoing the value.
func TestRelayClientFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"up", "--coordinator", "http://127.0.0.1:1", "--relay-client", "turbo-xyz"}, &stdout, &stderr)
	out := stderr.String()
	if code != 1 || !strings.Contains(out, "--relay-client: want per-peer or shared") || strings.Contains(out, "turbo-xyz") {
		t.Errorf("exit %d, %q; want 1 and the modes named, the value not echoed", code, out)
	}
}

package main

import (
	"strings"
	"testing"
)

func TestTURNAllocationLifetimeFlag(t *testing.T) {
	if _, out, _ := runCLI(t, "serve", "--help"); !strings.Contains(out, "-turn-allocation-lifetime") {
		t.Error("serve --help does not explain -turn-allocation-lifetime")
	}
	for _, bad := range []string{"5s", "2h", "soon"} {
		if code, _, errOut := runCLI(t, "serve", "--turn-allocation-lifetime", bad); code != 2 || errOut == "" {
			t.Errorf("--turn-allocation-lifetime %s: exit %d, stderr %q, want exit 2 and a message", bad, code, errOut)
		}
	}
}

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAuthKeyMaxUsesCLI: authkey create --max-uses N makes a capped key,
// and authkey list shows its uses against the cap.
func TestAuthKeyMaxUsesCLI(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "authkey", "create", "--max-uses", "5", "--json", "--state", dir)
	if code != 0 {
		t.Fatalf("authkey create --max-uses: exit %d: %s", code, errOut)
	}
	var k struct {
		Reusable bool   `json:"reusable"`
		MaxUses  *int64 `json:"max_uses"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &k); err != nil || !k.Reusable || k.MaxUses == nil || *k.MaxUses != 5 {
		t.Fatalf("created key %q: %+v %v, want reusable with max_uses 5", out, k, err)
	}
	code, out, errOut = runCLI(t, "authkey", "list", "--state", dir)
	if code != 0 || !strings.Contains(out, "0/5") {
		t.Fatalf("authkey list: exit %d, want uses 0/5:\n%s%s", code, out, errOut)
	}
	if code, _, _ := runCLI(t, "authkey", "create", "--max-uses", "-1", "--state", dir); code != 2 {
		t.Fatalf("--max-uses -1: exit %d, want 2", code)
	}
}

package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyAndNodeStateAreSecretFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := ensureStateDir(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	k1, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("second start generated a new key instead of reading the stored one")
	}
	if k1.Public() == k1 || k1.Public() == (Key{}) {
		t.Fatal("public key derivation is broken")
	}
	st := &nodeState{Coordinator: "http://c", NodeID: 7, Name: "n", IP: "100.64.0.7", Prefix: "100.64.0.0/10", Credential: "7.secret"}
	if err := saveNodeState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := loadNodeState(dir)
	if err != nil || got == nil || *got != *st {
		t.Fatalf("loaded %+v, %v; want %+v", got, err, st)
	}
	for _, f := range []string{privateKeyFile, nodeFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir has mode %v, want 0700", fi.Mode().Perm())
	}
}

func TestCorruptStateIsAnErrorNotAPanic(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, privateKeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKey(dir); err == nil {
		t.Fatal("corrupt private key accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, nodeFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadNodeState(dir); err == nil {
		t.Fatal("corrupt node state accepted")
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	var b backoff
	prev := b.next()
	if prev <= 0 {
		t.Fatalf("first backoff %v", prev)
	}
	for i := 0; i < 20; i++ {
		d := b.next()
		if d > 38*1e9 {
			t.Fatalf("backoff %v above the cap", d)
		}
		prev = d
	}
	if prev < 20*1e9 {
		t.Fatalf("backoff after 20 tries is %v, want near 30s", prev)
	}
	b.reset()
	if d := b.next(); d > 1e9 {
		t.Fatalf("backoff after reset is %v", d)
	}
}

func TestParseCoordinatorURL(t *testing.T) {
	for _, bad := range []string{"", "ftp://x", "http://", "::"} {
		if _, err := parseCoordinatorURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseCoordinatorURL("https://coord.example.com:8443"); err != nil {
		t.Error(err)
	}
}

// TestStateDirTightened: a state dir that exists with looser permissions
// (made by hand, or by an older build) is tightened to 0700.
func TestStateDirTightened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ensureStateDir(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("existing state dir left at mode %v, want 0700", fi.Mode().Perm())
	}
}

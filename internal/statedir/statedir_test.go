package statedir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsure(t *testing.T) {
	base := t.TempDir()
	perm := func(dir string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}

	fresh := filepath.Join(base, "fresh")
	if was, err := Ensure(fresh); err != nil || was != 0 || perm(fresh) != 0o700 {
		t.Fatalf("new dir: was %v, %v, mode %v", was, err, perm(fresh))
	}

	loose := filepath.Join(base, "loose")
	if err := os.Mkdir(loose, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o755)
	if was, err := Ensure(loose); err != nil || was != 0o755 || perm(loose) != 0o700 {
		t.Fatalf("existing 0755 dir: was %v, %v, mode now %v; want tightened to 0700", was, err, perm(loose))
	}
	if was, err := Ensure(loose); err != nil || was != 0 {
		t.Fatalf("second call: was %v, %v", was, err)
	}

	shared := filepath.Join(base, "shared")
	os.Mkdir(shared, 0o700)
	os.Chmod(shared, 0o1777)
	if _, err := Ensure(shared); err == nil {
		t.Fatal("a world-writable sticky dir was accepted")
	}
	if perm(shared) != 0o777 {
		t.Fatalf("a refused dir was changed to %v", perm(shared))
	}

	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Ensure(file); err == nil {
		t.Fatal("a file was accepted as state dir")
	}
}

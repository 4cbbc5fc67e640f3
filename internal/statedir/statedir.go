// Package statedir makes sure a directory that holds secrets (private
// keys, credentials, hashes) is private: created 0700, and tightened to
// 0700 if it already exists with looser permissions.
package statedir

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Ensure creates dir (mode 0700) or tightens an existing one to 0700. It
// returns the permissions the directory had before when it tightened them,
// zero otherwise. A directory writable by others (like /tmp), or owned by
// another user, is refused: tightening would not make it private, or would
// take it from its owner.
func Ensure(dir string) (was fs.FileMode, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("state dir %s is not a directory", dir)
	}
	mode := fi.Mode()
	if mode&os.ModeSticky != 0 || mode.Perm()&0o002 != 0 {
		return 0, fmt.Errorf("state dir %s is writable by others (mode %v): give a directory of its own", dir, mode.Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("state dir %s belongs to uid %d, not to us (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if mode.Perm()&0o077 == 0 {
		return 0, nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return 0, fmt.Errorf("tighten state dir: %w", err)
	}
	return mode.Perm(), nil
}

package coordinator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RequireState fails when no coordinator has used stateDir: it holds
// neither a SQLite store nor the lock a serve on PostgreSQL leaves. Commands
// that only read or change what already exists call it first, so that a
// mistyped --state gives an error instead of quietly creating an empty mesh
// there. With a PostgreSQL store (store != "") the database itself answers.
func RequireState(stateDir, store string) error {
	if store != "" {
		return nil
	}
	for _, name := range []string{DBFile, LockFile} {
		_, err := os.Stat(filepath.Join(stateDir, name))
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("coordinator state: %w", err)
		}
	}
	return fmt.Errorf("no coordinator state in %s (%s not found): give --state of a coordinator that has run \"serve\", or --store for PostgreSQL", stateDir, DBFile)
}

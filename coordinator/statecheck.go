package coordinator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RequireState fails when stateDir holds no coordinator's SQLite store.
// Commands that only read or change what already exists call it first, so
// that a mistyped --state gives an error instead of quietly creating an
// empty mesh there. A PostgreSQL store (store != "") is not checked: the
// database itself answers.
func RequireState(stateDir, store string) error {
	if store != "" {
		return nil
	}
	p := filepath.Join(stateDir, DBFile)
	_, err := os.Stat(p)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no coordinator state in %s (%s not found): give --state of a coordinator that has run \"serve\", or --store for PostgreSQL", stateDir, DBFile)
	default:
		return fmt.Errorf("coordinator state: %w", err)
	}
}

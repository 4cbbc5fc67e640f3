package coordinator

import "context"

// sqliteEngine is the default engine: one file in the state directory.
type sqliteEngine struct{}

func (sqliteEngine) name() string { return "sqlite" }

func (sqliteEngine) rebind(q string) string { return q }

// beginWrite has nothing to do: the DSN's _txlock=immediate takes SQLite's
// write lock at BEGIN.
func (sqliteEngine) beginWrite(context.Context, *dbTx) error { return nil }

// queueWriters: the store's one connection queues them.
func (sqliteEngine) queueWriters() bool { return false }

// fansOut: one process per SQLite store, nothing to announce.
func (sqliteEngine) fansOut() bool { return false }

// keepsSecrets: with SQLite they stay files in the state directory.
func (sqliteEngine) keepsSecrets() bool { return false }

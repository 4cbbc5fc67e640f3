package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver; no cgo needed
)

// sqliteEngine is the default engine: one file in the state directory.
type sqliteEngine struct{}

func (sqliteEngine) Name() string { return "sqlite" }

func (sqliteEngine) Rebind(q string) string { return q }

// BeginWrite has nothing to do: the DSN's _txlock=immediate takes SQLite's
// write lock at BEGIN.
func (sqliteEngine) BeginWrite(context.Context, *Tx) error { return nil }

// QueueWriters: the store's one connection queues them.
func (sqliteEngine) QueueWriters() bool { return false }

// FansOut: one process per SQLite store, nothing to announce.
func (sqliteEngine) FansOut() bool { return false }

// KeepsSecrets: with SQLite they stay files in the state directory.
func (sqliteEngine) KeepsSecrets() bool { return false }

// OpenSQLite opens the SQLite database file path (which the caller has
// created with the mode it wants) and brings its schema up to date.
// Several processes may open one file at once (the server and the admin
// commands), which is why it runs in WAL mode with a busy timeout.
func OpenSQLite(path string) (*DB, error) {
	// busy_timeout makes a writer wait for another process's write instead of
	// failing; _txlock=immediate takes the write lock at BEGIN, so a
	// read-then-write transaction cannot fail half-way on a lock upgrade.
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection serialises this process's writers in Go rather than in
	// SQLite's lock, and keeps pragmas on the single connection in force.
	sdb.SetMaxOpenConns(1)
	sdb.SetConnMaxLifetime(0)
	db := &DB{DB: sdb, Eng: sqliteEngine{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.Eng.Migrate(ctx, db); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// IntegrityCheck runs SQLite's full integrity check.
func (sqliteEngine) IntegrityCheck(ctx context.Context, db *DB) error {
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("integrity check: %d problems, first: %s", len(problems), problems[0])
	}
	return nil
}

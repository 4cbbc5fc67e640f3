package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver; no cgo needed

	"github.com/meshvpn/meshvpn/internal/statedir"
)

// DBFile is the name of the SQLite database inside the state directory.
const DBFile = "coordinator.db"

// Store is the coordinator's persistent state: auth keys and nodes. Several
// processes may open the same store at once (the server and the admin
// commands), which is why it runs in WAL mode with a busy timeout.
type Store struct {
	db   *sqlDB
	eng  engine
	path string
	// now is the clock; tests replace it to exercise expiry.
	now func() time.Time
	// prefix6 is the mesh's IPv6 overlay prefix (overlay6.go), read once
	// when the store is opened.
	prefix6 netip.Prefix
	// ipHint is where the search for a free overlay address starts.
	ipHint ipHint
	// ipHoldback is how long a removed node's address stays unused
	// (guarded by ipHint.mu).
	ipHoldback time.Duration
	// maxNodes caps the nodes admitted (see nodeCap); 0: control.MaxNodes.
	maxNodes int
	// writeMu queues this process's PostgreSQL writers in Go, so that they
	// wait for the database's write lock on one connection, not on all of
	// the pool's (SQLite's single connection does that already).
	writeMu sync.Mutex
}

// OpenStore opens (creating if needed) the store in dir. The directory is
// created with (or tightened to) mode 0700 and the database file with mode
// 0600, since it holds credential hashes.
func OpenStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open store: state directory is empty")
	}
	if _, err := statedir.Ensure(dir); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, DBFile)
	// Create the file ourselves so SQLite never creates it with a umask-derived
	// mode; its -wal and -shm files copy this file's permissions.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	// busy_timeout makes a writer wait for another process's write instead of
	// failing; _txlock=immediate takes the write lock at BEGIN, so a
	// read-then-write transaction cannot fail half-way on a lock upgrade.
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection serialises this process's writers in Go rather than in
	// SQLite's lock, and keeps pragmas on the single connection in force.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)

	s := newStore(db, sqliteEngine{}, path)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.eng.migrate(ctx, s); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func newStore(db *sql.DB, eng engine, path string) *Store {
	return &Store{db: &sqlDB{DB: db, eng: eng}, eng: eng, path: path, now: time.Now, ipHoldback: DefaultIPHoldback}
}

// Path is the database file's path (for PostgreSQL, its host and database).
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// inTx runs fn in one write transaction and commits it if fn succeeds.
// Writers run one at a time on either engine (SQLite: one connection and
// BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so the
// checks a registration makes (key uses, node cap, free address, free name)
// still hold when it commits, also across processes.
func (s *Store) inTx(ctx context.Context, fn func(tx *dbTx) error) error {
	if s.eng.queueWriters() {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// beginAttempts bounds how often begin tries a fresh connection: after a
// PostgreSQL restart every pooled connection is broken, which the first
// statement on each finds out.
const beginAttempts = 3

// begin starts a write transaction. Nothing has been written when it
// fails, so it tries again on another connection.
func (s *Store) begin(ctx context.Context) (*dbTx, error) {
	var err error
	for range beginAttempts {
		var stx *sql.Tx
		if stx, err = s.db.BeginTx(ctx, nil); err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		tx := &dbTx{Tx: stx, eng: s.eng}
		if err = s.eng.beginWrite(ctx, tx); err == nil {
			return tx, nil
		}
		tx.Rollback()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("begin transaction: %w", err)
}

// Times are stored as Unix milliseconds; NULL means "never".

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func nullMillis(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}

// IntegrityCheck runs SQLite's full integrity check and returns an error
// unless the database is intact (PostgreSQL checks its own pages: nil).
func (s *Store) IntegrityCheck(ctx context.Context) error {
	return s.eng.integrityCheck(ctx, s.db)
}

func (sqliteEngine) integrityCheck(ctx context.Context, db *sqlDB) error {
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

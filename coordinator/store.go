package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshvpn/meshvpn/coordinator/store"
	"github.com/meshvpn/meshvpn/internal/statedir"
)

// DBFile is the name of the SQLite database inside the state directory.
const DBFile = "coordinator.db"

// dbTimeout bounds one store operation the server makes on its own (not
// for a request, whose context bounds it).
const dbTimeout = 10 * time.Second

// Store is the coordinator's persistent state: auth keys and nodes. Several
// processes may open the same store at once (the server and the admin
// commands), which is why it runs in WAL mode with a busy timeout.
type Store struct {
	db   *store.DB
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
	// replica names this coordinator among those sharing a PostgreSQL
	// store (replica.go); "" for an admin command or SQLite.
	replica string
	// listen is the PostgreSQL connection config a replica LISTENs with
	// (nil for SQLite).
	listen *pgx.ConnConfig
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

	db, err := store.OpenSQLite(path)
	if err != nil {
		return nil, err
	}
	return openedStore(db, path)
}

// openedStore makes the Store on a database whose schema is up to date and
// reads the mesh settings kept in it.
func openedStore(db *store.DB, path string) (*Store, error) {
	s := newStore(db, path)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.loadOverlayPrefix6(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func newStore(db *store.DB, path string) *Store {
	return &Store{db: db, path: path, now: time.Now, ipHoldback: DefaultIPHoldback}
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

// inTx runs fn in one write transaction and commits it if fn succeeds;
// writers take turns, also across processes (store.DB.InTx).
func (s *Store) inTx(ctx context.Context, fn func(tx *dbTx) error) error {
	return s.db.InTx(ctx, fn)
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
	return s.db.IntegrityCheck(ctx)
}

// OpenPostgresStore opens the store in the PostgreSQL database dsn (a URL or
// key=value DSN), creating or upgrading its schema. Several coordinators may
// open one database at once.
func OpenPostgresStore(dsn string) (*Store, error) {
	db, cfg, where, err := store.OpenPostgres(dsn)
	if err != nil {
		return nil, err
	}
	s, err := openedStore(db, where)
	if err != nil {
		return nil, err
	}
	s.listen = cfg
	return s, nil
}

// OpenStoreAt opens the store named by name: a PostgreSQL URL or DSN, or
// "" for the SQLite file in stateDir.
func OpenStoreAt(stateDir, name string) (*Store, error) {
	switch {
	case name == "":
		return OpenStore(stateDir)
	case store.IsPostgresURL(name):
		return OpenPostgresStore(name)
	}
	return nil, fmt.Errorf("open store: want a postgres:// URL or a key=value DSN, or nothing for SQLite in the state directory")
}

// IsPostgresURL tells whether name names a PostgreSQL database.
func IsPostgresURL(name string) bool { return store.IsPostgresURL(name) }

// StoreHasPassword tells whether a PostgreSQL URL or DSN carries a
// password (which a command line shows to every user of the host).
func StoreHasPassword(name string) bool { return store.HasPassword(name) }

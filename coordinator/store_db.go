package coordinator

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// engine is what differs between the store's database engines. The store's
// operations are written once, in SQL both engines take; an engine rewrites
// the placeholders, migrates its own schema and serialises writers.
type engine interface {
	// name is "sqlite" or "postgres", for messages.
	name() string
	// rebind turns the store's ?-placeholders into the engine's.
	rebind(query string) string
	// migrate brings the schema up to date.
	migrate(ctx context.Context, s *Store) error
	// beginWrite runs first in every write transaction: it takes whatever
	// lock makes the store's writers one at a time (see inTx).
	beginWrite(ctx context.Context, tx *dbTx) error
	// queueWriters tells whether inTx must queue this process's writers
	// itself (the pool has several connections).
	queueWriters() bool
	// fansOut tells whether several coordinators share the store and
	// announce their changes to each other (store_fanout.go).
	fansOut() bool
	// keepsSecrets tells whether the store keeps the secrets every
	// coordinator on it must share (secret_shared.go).
	keepsSecrets() bool
	// integrityCheck checks the database's pages, if the engine leaves
	// that to us.
	integrityCheck(ctx context.Context, db *sqlDB) error
}

// sqlDB is a *sql.DB whose queries are written with ?-placeholders.
type sqlDB struct {
	*sql.DB
	eng engine
}

func (d *sqlDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(ctx, d.eng.rebind(q), args...)
}

func (d *sqlDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(ctx, d.eng.rebind(q), args...)
}

func (d *sqlDB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(ctx, d.eng.rebind(q), args...)
}

// dbTx is a *sql.Tx whose queries are written with ?-placeholders.
type dbTx struct {
	*sql.Tx
	eng engine
}

func (t *dbTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.eng.rebind(q), args...)
}

func (t *dbTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.eng.rebind(q), args...)
}

func (t *dbTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.eng.rebind(q), args...)
}

func (t *dbTx) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, t.eng.rebind(q))
}

// dollarPlaceholders rewrites ? as $1, $2, … and ?N as $N. The store's
// queries hold no ? inside string literals.
func dollarPlaceholders(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] != '?' {
			b.WriteByte(q[i])
			continue
		}
		j := i + 1
		for j < len(q) && q[j] >= '0' && q[j] <= '9' {
			j++
		}
		b.WriteByte('$')
		if j > i+1 {
			b.WriteString(q[i+1 : j])
			i = j - 1
			continue
		}
		n++
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// Package store is the coordinator's database layer: one interface over
// its two engines, SQLite (the default, one file in the state directory)
// and PostgreSQL (for replicas), each with its own versioned schema
// migrations. The coordinator's operations are written once, in SQL both
// engines take, with ?-placeholders; an engine rewrites the placeholders,
// migrates its schema and serialises writers.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// Engine is what differs between the database engines.
type Engine interface {
	// Name is "sqlite" or "postgres", for messages.
	Name() string
	// Rebind turns ?-placeholders into the engine's.
	Rebind(query string) string
	// Migrate brings the schema up to date.
	Migrate(ctx context.Context, db *DB) error
	// BeginWrite runs first in every write transaction: it takes whatever
	// lock makes writers one at a time (see DB.InTx).
	BeginWrite(ctx context.Context, tx *Tx) error
	// QueueWriters tells whether InTx must queue this process's writers
	// itself (the pool has several connections).
	QueueWriters() bool
	// KeepsSecrets tells whether the database keeps the secrets every
	// coordinator on it must share.
	KeepsSecrets() bool
	// FansOut tells whether several coordinators share the database and
	// announce their changes to each other.
	FansOut() bool
	// IntegrityCheck checks the database's pages, if the engine leaves
	// that to us.
	IntegrityCheck(ctx context.Context, db *DB) error
}

// DB is a *sql.DB of one engine whose queries are written with
// ?-placeholders.
type DB struct {
	*sql.DB
	Eng Engine
	// writeMu queues this process's PostgreSQL writers in Go, so that they
	// wait for the database's write lock on one connection, not on all of
	// the pool's (SQLite's single connection does that already).
	writeMu sync.Mutex
}

func (d *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(ctx, d.Eng.Rebind(q), args...)
}

func (d *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(ctx, d.Eng.Rebind(q), args...)
}

func (d *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(ctx, d.Eng.Rebind(q), args...)
}

// Tx is a *sql.Tx whose queries are written with ?-placeholders.
type Tx struct {
	*sql.Tx
	eng Engine
}

func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.eng.Rebind(q), args...)
}

func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.eng.Rebind(q), args...)
}

func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.eng.Rebind(q), args...)
}

func (t *Tx) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, t.eng.Rebind(q))
}

// InTx runs fn in one write transaction and commits it if fn succeeds.
// Writers run one at a time on either engine (SQLite: one connection and
// BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so the
// checks a registration makes (key uses, node cap, free address, free name)
// still hold when it commits, also across processes.
func (d *DB) InTx(ctx context.Context, fn func(tx *Tx) error) error {
	if d.Eng.QueueWriters() {
		d.writeMu.Lock()
		defer d.writeMu.Unlock()
	}
	tx, err := d.begin(ctx)
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

// InOwnTx runs fn in one transaction that does not take turns with the
// writers (no write lock on PostgreSQL; SQLite's one connection still
// makes it wait its turn): for rows only this process writes, which no
// other writer's checks read (relay usage).
func (d *DB) InOwnTx(ctx context.Context, fn func(tx *Tx) error) error {
	stx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{Tx: stx, eng: d.Eng}
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
func (d *DB) begin(ctx context.Context) (*Tx, error) {
	var err error
	for range beginAttempts {
		var stx *sql.Tx
		if stx, err = d.DB.BeginTx(ctx, nil); err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		tx := &Tx{Tx: stx, eng: d.Eng}
		if err = d.Eng.BeginWrite(ctx, tx); err == nil {
			return tx, nil
		}
		tx.Rollback()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("begin transaction: %w", err)
}

// IntegrityCheck checks the database's pages (SQLite) and returns an error
// unless they are intact; PostgreSQL checks its own: nil.
func (d *DB) IntegrityCheck(ctx context.Context) error { return d.Eng.IntegrityCheck(ctx, d) }

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SQLiteMigrations are applied in order; the schema version is the number of
// migrations applied. Append new steps, never edit old ones: a store created
// by an older build must upgrade by running only the steps it lacks.
var SQLiteMigrations = []string{
	// 1: auth keys and nodes.
	`CREATE TABLE auth_keys (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		key_hash   BLOB    NOT NULL UNIQUE,
		reusable   INTEGER NOT NULL,
		expires_at INTEGER,
		created_at INTEGER NOT NULL,
		used_at    INTEGER,
		uses       INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE nodes (
		id              INTEGER PRIMARY KEY AUTOINCREMENT,
		name            TEXT    NOT NULL UNIQUE,
		ip              TEXT    NOT NULL UNIQUE,
		public_key      TEXT    NOT NULL UNIQUE,
		credential_hash BLOB    NOT NULL,
		auth_key_id     INTEGER REFERENCES auth_keys(id) ON DELETE SET NULL,
		created_at      INTEGER NOT NULL,
		last_seen       INTEGER,
		online          INTEGER NOT NULL DEFAULT 0
	);`,
	// 2: node lifecycle. Keys carry the ephemeral flag and tags they give
	// their nodes and can be revoked; a node can be expired; a removed node
	// leaves a tombstone so its credential is refused with a clear reason
	// (AUTOINCREMENT already keeps its ID from being reused).
	`ALTER TABLE auth_keys ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE auth_keys ADD COLUMN tags TEXT NOT NULL DEFAULT '';
	ALTER TABLE auth_keys ADD COLUMN revoked_at INTEGER;
	ALTER TABLE nodes ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN expired_at INTEGER;
	CREATE TABLE removed_nodes (
		id              INTEGER PRIMARY KEY,
		name            TEXT    NOT NULL,
		credential_hash BLOB    NOT NULL,
		removed_at      INTEGER NOT NULL,
		reason          TEXT    NOT NULL
	);`,
	// 3: overlay addresses of removed nodes, held back from reuse for a
	// while so that peers' address-based rules do not pass to a stranger.
	`CREATE TABLE held_ips (
		ip          TEXT    PRIMARY KEY,
		released_at INTEGER NOT NULL
	);
	CREATE INDEX held_ips_released ON held_ips (released_at);`,
	// 4: an optional cap on the registrations a key admits (NULL: none).
	`ALTER TABLE auth_keys ADD COLUMN max_uses INTEGER;`,
	// 5: the access policy, as the operator wrote it (one row, or none for
	// "everything allowed").
	`CREATE TABLE policy (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		source     BLOB    NOT NULL,
		updated_at INTEGER NOT NULL
	);`,
	// 6: the netmap version agents were last sent, so that a restarted
	// coordinator can resume them (see coordinator/hub/netmapversion.go).
	`CREATE TABLE netmap_version (
		epoch  TEXT    NOT NULL,
		seq    INTEGER NOT NULL,
		digest TEXT    NOT NULL
	);`,
	// 7 (ipv6overlay): settings of the mesh as a whole, one row each; the
	// first is its IPv6 overlay prefix (overlay6.go), written by Go right
	// after this step since SQL cannot draw it.
	meshSettingsTable,
	// 8 (storm): the batches of the last netmap versions, so a restarted
	// coordinator can still bring an agent a few batches behind up to date
	// (netmapversion.go).
	netmapBatchesTable,
	// 9 (usageha): relay usage per relay, node and history bucket, as
	// each coordinator counted it, so that usage asked on any replica
	// lists every relay of the mesh.
	relayUsageTable,
}

// Migrate brings the SQLite schema up to date. It runs in one immediate
// transaction, so two processes opening a new store at once cannot both
// apply a step.
func (sqliteEngine) Migrate(ctx context.Context, db *DB) error {
	return migrateWith(ctx, db, SQLiteMigrations)
}

// migrateWith applies the steps of steps the store lacks, in one write
// transaction.
func migrateWith(ctx context.Context, db *DB, steps []string) error {
	return db.InTx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("migrate: create version table: %w", err)
		}
		var version int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return fmt.Errorf("migrate: init version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("migrate: read version: %w", err)
		}
		if version > len(steps) {
			return fmt.Errorf("migrate: store schema version %d is newer than this build (%d)", version, len(steps))
		}
		for i := version; i < len(steps); i++ {
			if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
				return fmt.Errorf("migrate: step %d: %w", i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(steps)); err != nil {
			return fmt.Errorf("migrate: set version: %w", err)
		}
		return nil
	})
}

// meshSettingsTable holds settings of the mesh as a whole (name, value),
// shared by every coordinator on one store (the coordinator's overlay6.go
// draws the first, the IPv6 overlay prefix, right after the migrations).
const meshSettingsTable = `CREATE TABLE mesh_settings (
		name  TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`

// netmapBatchesTable keeps the node IDs of each coordinator's (replica's)
// last delta batches: seq is the batch's netmap version in epoch, ids its
// nodes, comma-separated. Rows older than the hub's ring are deleted as
// new ones come.
const netmapBatchesTable = `CREATE TABLE netmap_batches (
		replica TEXT   NOT NULL DEFAULT '',
		epoch   TEXT   NOT NULL,
		seq     BIGINT NOT NULL,
		ids     TEXT   NOT NULL,
		PRIMARY KEY (replica, seq)
	);`

// relayUsageTable (usageha) keeps each coordinator process's relay usage
// ledgers (coordinator/usage_store.go): writer is the process (a random
// name per run), replica the replica it runs as (empty with SQLite),
// relay_node the peer relay that reported (0: the writer's embedded
// relay), bucket_start and span the history bucket (Unix milliseconds; a
// minute or an hour), the counts what was relayed for node in it, and
// reported_at when the peer relay last reported to the writer. A writer
// rewrites its own rows only; rows older than the history (24 h) are
// deleted by any.
const relayUsageTable = `CREATE TABLE relay_usage (
		writer       TEXT   NOT NULL,
		replica      TEXT   NOT NULL,
		relay_node   BIGINT NOT NULL,
		node         BIGINT NOT NULL,
		bucket_start BIGINT NOT NULL,
		span         BIGINT NOT NULL,
		bytes_in     BIGINT NOT NULL,
		packets_in   BIGINT NOT NULL,
		bytes_out    BIGINT NOT NULL,
		packets_out  BIGINT NOT NULL,
		reported_at  BIGINT,
		PRIMARY KEY (writer, relay_node, node, bucket_start)
	);
	CREATE INDEX relay_usage_start ON relay_usage (bucket_start);`

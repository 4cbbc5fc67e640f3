package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// loadNetmapVersion reads the version stored with the last batch (see
// netmapversion.go); ok is false when there is none.
//
// Replicas each keep their own row, with the database time it was saved.
func (s *Store) loadNetmapVersion(ctx context.Context) (v netmapVersion, ok bool, err error) {
	if s.fansOut() {
		return scanVersion(s.db.QueryRowContext(ctx, `SELECT epoch, seq, digest, COALESCE(saved_at, 0) FROM netmap_version WHERE replica = ?`, s.replica))
	}
	return scanVersion(s.db.QueryRowContext(ctx, `SELECT epoch, seq, digest, 0 FROM netmap_version`))
}

// scanVersion reads one stored version (epoch, seq, digest, saved_at); ok
// is false when there is none or it is not ours (a new epoch follows).
func scanVersion(row *sql.Row) (v netmapVersion, ok bool, err error) {
	var seq int64
	var digest string
	err = row.Scan(&v.epoch, &seq, &digest, &v.savedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("load netmap version: %w", err)
	}
	d, err := strconv.ParseUint(digest, 16, 64)
	if err != nil {
		return v, false, nil
	}
	v.seq, v.digest = uint64(seq), d
	return v, true, nil
}

// saveNetmapVersion replaces the stored version, in tx, and adds its
// batch to the stored ones.
func (s *Store) saveNetmapVersion(ctx context.Context, tx *dbTx, v netmapVersion) error {
	if err := s.saveVersionRow(ctx, tx, v); err != nil {
		return err
	}
	return s.saveBatch(ctx, tx, v)
}

// saveVersionRow replaces the stored version, in tx.
func (s *Store) saveVersionRow(ctx context.Context, tx *dbTx, v netmapVersion) error {
	if s.fansOut() {
		if _, err := tx.ExecContext(ctx, `DELETE FROM netmap_version WHERE replica = ?`, s.replica); err != nil {
			return fmt.Errorf("save netmap version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO netmap_version (epoch, seq, digest, replica, saved_at) VALUES (?, ?, ?, ?, `+pgNowMillis+`)`,
			v.epoch, int64(v.seq), strconv.FormatUint(v.digest, 16), s.replica); err != nil {
			return fmt.Errorf("save netmap version: %w", err)
		}
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM netmap_version`); err != nil {
		return fmt.Errorf("save netmap version: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO netmap_version (epoch, seq, digest) VALUES (?, ?, ?)`,
		v.epoch, int64(v.seq), strconv.FormatUint(v.digest, 16)); err != nil {
		return fmt.Errorf("save netmap version: %w", err)
	}
	return nil
}

// versionByEpoch reads the stored version of the replica whose epoch is
// epoch, if one is stored.
func (s *Store) versionByEpoch(ctx context.Context, epoch string) (netmapVersion, bool, error) {
	return scanVersion(s.db.QueryRowContext(ctx, `SELECT epoch, seq, digest, COALESCE(saved_at, 0) FROM netmap_version WHERE epoch = ?`, epoch))
}

// saveBatch stores the nodes of v's batch under its SEQ and deletes the
// batches the hub's ring no longer holds (those before v.keepFrom, and any
// of another epoch), in tx.
func (s *Store) saveBatch(ctx context.Context, tx *dbTx, v netmapVersion) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM netmap_batches WHERE replica = ? AND (epoch <> ? OR seq < ? OR seq >= ?)`,
		s.replica, v.epoch, int64(v.keepFrom), int64(v.seq)); err != nil {
		return fmt.Errorf("save netmap batch: %w", err)
	}
	ids := make([]string, len(v.batch))
	for i, id := range v.batch {
		ids[i] = strconv.FormatUint(id, 10)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO netmap_batches (replica, epoch, seq, ids) VALUES (?, ?, ?, ?)`,
		s.replica, v.epoch, int64(v.seq), strings.Join(ids, ",")); err != nil {
		return fmt.Errorf("save netmap batch: %w", err)
	}
	return nil
}

// loadBatches reads the stored batches of epoch up to SEQ upTo, oldest
// first. An epoch is one coordinator's (replica's) series: a replica reads
// a dead one's batches by its epoch (replica_resume.go).
func (s *Store) loadBatches(ctx context.Context, epoch string, upTo uint64) ([]hub.Batch, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, ids FROM netmap_batches WHERE epoch = ? AND seq <= ? ORDER BY seq`,
		epoch, int64(upTo))
	if err != nil {
		return nil, fmt.Errorf("load netmap batches: %w", err)
	}
	defer rows.Close()
	var out []hub.Batch
	for rows.Next() {
		var seq int64
		var list string
		if err := rows.Scan(&seq, &list); err != nil {
			return nil, fmt.Errorf("load netmap batches: %w", err)
		}
		b := hub.Batch{Seq: uint64(seq)}
		for f := range strings.SplitSeq(list, ",") {
			if f == "" {
				continue
			}
			id, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("load netmap batch %d: bad node ID: %w", seq, err)
			}
			b.IDs = append(b.IDs, id)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load netmap batches: %w", err)
	}
	return out, nil
}

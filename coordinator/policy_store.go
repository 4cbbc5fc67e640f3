package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Policy returns the stored policy source, or nil if none is set.
func (s *Store) Policy(ctx context.Context) ([]byte, error) {
	var src []byte
	err := s.db.QueryRowContext(ctx, `SELECT source FROM policy WHERE id = 1`).Scan(&src)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return src, nil
}

// ClearPolicy removes the policy: everything is allowed again.
func (s *Store) ClearPolicy(ctx context.Context) error {
	return s.inTx(ctx, func(tx *dbTx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM policy`); err != nil {
			return fmt.Errorf("clear policy: %w", err)
		}
		return s.announcePolicy(ctx, tx)
	})
}

// SetPolicy stores a checked policy source, replacing the old one.
//
// The change and its notification to the other replicas commit together
// (PostgreSQL delivers a NOTIFY when its transaction commits): replicas
// reload the policy only when told, so a change stored without its
// notification (a crash between the two) would leave them on the old one
// until they restart (TestPolicyNotifyAtomic).
func (s *Store) SetPolicy(ctx context.Context, src []byte) error {
	return s.inTx(ctx, func(tx *dbTx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO policy (id, source, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at`,
			src, s.now().Unix())
		if err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		return s.announcePolicy(ctx, tx)
	})
}

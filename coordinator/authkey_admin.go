package coordinator

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AuthKeyInfo is a stored auth key as `authkey list` shows it. The key
// itself is not stored, so it cannot be shown again.
type AuthKeyInfo struct {
	AuthKey
	Uses      int64
	UsedAt    time.Time // zero: never used
	RevokedAt time.Time // zero: not revoked
}

// State is "valid", "revoked", "expired" or "used", judged at now.
func (k AuthKeyInfo) State(now time.Time) string {
	switch {
	case !k.RevokedAt.IsZero():
		return "revoked"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return "expired"
	case !k.Reusable && k.Uses > 0, k.MaxUses > 0 && k.Uses >= k.MaxUses:
		return "used"
	}
	return "valid"
}

// Now is the store's clock: key states are judged on the coordinator's
// clock, never a client's.
func (s *Store) Now() time.Time { return s.now() }

// ListAuthKeys returns every auth key, ordered by ID.
func (s *Store) ListAuthKeys(ctx context.Context) ([]AuthKeyInfo, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT id, reusable, ephemeral, tags, expires_at, created_at, uses, used_at, revoked_at, max_uses FROM auth_keys ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list auth keys: %w", err)
	}
	defer rows.Close()
	var out []AuthKeyInfo
	for rows.Next() {
		var (
			k                      AuthKeyInfo
			tags                   string
			expires, used, revoked sql.NullInt64
			maxUses                sql.NullInt64
			created                int64
		)
		if err := rows.Scan(&k.ID, &k.Reusable, &k.Ephemeral, &tags, &expires, &created, &k.Uses, &used, &revoked, &maxUses); err != nil {
			return nil, fmt.Errorf("list auth keys: %w", err)
		}
		k.Tags = splitTags(tags)
		k.MaxUses = maxUses.Int64
		k.ExpiresAt = fromMillis(expires)
		k.CreatedAt = time.UnixMilli(created).UTC()
		k.UsedAt = fromMillis(used)
		k.RevokedAt = fromMillis(revoked)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list auth keys: %w", err)
	}
	return out, nil
}

// RevokeAuthKey makes the key unusable from now on. Nodes it admitted stay:
// remove them with RemoveNode if they must go too. Revoking twice is fine.
func (s *Store) RevokeAuthKey(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE auth_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, toMillis(s.now()), id)
	if err != nil {
		return fmt.Errorf("revoke auth key %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("revoke auth key %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("revoke auth key %d: %w", id, ErrAuthKeyNotFound)
	}
	return nil
}

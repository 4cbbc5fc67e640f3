package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AuthKeyPrefix marks meshvpn auth keys, so a leaked one is recognisable
// (and greppable by secret scanners).
const AuthKeyPrefix = "mvk-"

// Auth key failures. Their texts go to the client as is, so an operator sees
// why a node was refused.
var (
	ErrUnknownAuthKey = errors.New("unknown auth key")
	ErrAuthKeyExpired = errors.New("auth key expired")
	ErrAuthKeyUsed    = errors.New("auth key already used")
)

// AuthKey describes a stored auth key. The key itself is never stored; only
// NewAuthKey carries it, once, to the operator.
type AuthKey struct {
	ID        int64
	Reusable  bool
	ExpiresAt time.Time // zero: never expires
	CreatedAt time.Time
}

// NewAuthKey is a freshly created key and its secret.
type NewAuthKey struct {
	AuthKey
	Key string
}

// CreateAuthKey makes a new auth key. expiry 0 means it never expires.
func (s *Store) CreateAuthKey(ctx context.Context, reusable bool, expiry time.Duration) (NewAuthKey, error) {
	if expiry < 0 {
		return NewAuthKey{}, fmt.Errorf("create auth key: negative expiry %v", expiry)
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return NewAuthKey{}, fmt.Errorf("create auth key: %w", err)
	}
	key := AuthKeyPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	now := s.now().UTC()
	var expires time.Time
	if expiry > 0 {
		expires = now.Add(expiry)
	}
	res, err := s.db.ExecContext(ctx,
		`INSERT INTO auth_keys (key_hash, reusable, expires_at, created_at) VALUES (?, ?, ?, ?)`,
		hashSecret(key), reusable, nullMillis(expires), toMillis(now))
	if err != nil {
		return NewAuthKey{}, fmt.Errorf("create auth key: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return NewAuthKey{}, fmt.Errorf("create auth key: %w", err)
	}
	return NewAuthKey{
		AuthKey: AuthKey{ID: id, Reusable: reusable, ExpiresAt: expires, CreatedAt: now},
		Key:     key,
	}, nil
}

// checkAuthKey finds a usable auth key inside tx and returns its ID. It does
// not consume the key; useAuthKey does, in the same transaction, once the
// node is admitted.
func (s *Store) checkAuthKey(ctx context.Context, tx *sql.Tx, key string) (int64, error) {
	if !strings.HasPrefix(key, AuthKeyPrefix) {
		return 0, ErrUnknownAuthKey
	}
	var (
		id       int64
		reusable bool
		expires  sql.NullInt64
		uses     int64
	)
	err := tx.QueryRowContext(ctx,
		`SELECT id, reusable, expires_at, uses FROM auth_keys WHERE key_hash = ?`,
		hashSecret(key)).Scan(&id, &reusable, &expires, &uses)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrUnknownAuthKey
	}
	if err != nil {
		return 0, fmt.Errorf("look up auth key: %w", err)
	}
	if expires.Valid && !s.now().Before(fromMillis(expires)) {
		return 0, ErrAuthKeyExpired
	}
	if !reusable && uses > 0 {
		return 0, ErrAuthKeyUsed
	}
	return id, nil
}

// useAuthKey records one use of the key. The WHERE clause re-checks
// single-use keys, so even a racing transaction cannot use one twice.
func (s *Store) useAuthKey(ctx context.Context, tx *sql.Tx, id int64) error {
	res, err := tx.ExecContext(ctx,
		`UPDATE auth_keys SET uses = uses + 1, used_at = ? WHERE id = ? AND (reusable OR uses = 0)`,
		toMillis(s.now()), id)
	if err != nil {
		return fmt.Errorf("use auth key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("use auth key: %w", err)
	}
	if n != 1 {
		return ErrAuthKeyUsed
	}
	return nil
}

// hashSecret is how auth keys and credentials are stored: a secret of 32
// random bytes needs no salt or slow hash, and SHA-256 lets us look it up.
func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

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
	ErrAuthKeyRevoked = errors.New("auth key revoked")
	ErrAuthKeyUsedUp  = errors.New("auth key has no uses left")
)

// AuthKey describes a stored auth key. The key itself is never stored; only
// NewAuthKey carries it, once, to the operator.
type AuthKey struct {
	ID        int64
	Reusable  bool
	Ephemeral bool      // nodes it admits are removed once offline for a while
	Tags      []string  // given to every node it admits
	MaxUses   int64     // registrations it admits at most; 0: no cap
	ExpiresAt time.Time // zero: never expires
	CreatedAt time.Time
}

// AuthKeyOptions are what an operator chooses for a new key.
type AuthKeyOptions struct {
	Reusable  bool
	Ephemeral bool
	// Expiry is the key's lifetime; 0 means it never expires. It is
	// compared on the coordinator's clock only.
	Expiry time.Duration
	Tags   []string
	// MaxUses caps the registrations the key admits (each node joining
	// with it, or rejoining with it after expiry); 0 means no cap. A cap
	// above 1 makes the key reusable.
	MaxUses int64
}

// NewAuthKey is a freshly created key and its secret.
type NewAuthKey struct {
	AuthKey
	Key string
}

// CreateAuthKey makes a new auth key. expiry 0 means it never expires.
func (s *Store) CreateAuthKey(ctx context.Context, reusable bool, expiry time.Duration) (NewAuthKey, error) {
	return s.CreateAuthKeyWith(ctx, AuthKeyOptions{Reusable: reusable, Expiry: expiry})
}

// CreateAuthKeyWith makes a new auth key with the given options.
func (s *Store) CreateAuthKeyWith(ctx context.Context, o AuthKeyOptions) (NewAuthKey, error) {
	reusable, expiry := o.Reusable || o.MaxUses > 1, o.Expiry
	if expiry < 0 {
		return NewAuthKey{}, fmt.Errorf("create auth key: negative expiry %v", expiry)
	}
	if o.MaxUses < 0 {
		return NewAuthKey{}, fmt.Errorf("create auth key: negative max uses %d", o.MaxUses)
	}
	tags, err := NormalizeTags(o.Tags)
	if err != nil {
		return NewAuthKey{}, fmt.Errorf("create auth key: %w", err)
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
	var id int64
	err = s.db.QueryRowContext(ctx,
		`INSERT INTO auth_keys (key_hash, reusable, ephemeral, tags, expires_at, created_at, max_uses) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		hashSecret(key), reusable, o.Ephemeral, joinTags(tags), nullMillis(expires), toMillis(now), nullCount(o.MaxUses)).Scan(&id)
	if err != nil {
		return NewAuthKey{}, fmt.Errorf("create auth key: %w", err)
	}
	return NewAuthKey{
		AuthKey: AuthKey{ID: id, Reusable: reusable, Ephemeral: o.Ephemeral, Tags: tags, MaxUses: o.MaxUses, ExpiresAt: expires, CreatedAt: now},
		Key:     key,
	}, nil
}

// checkAuthKey finds a usable auth key inside tx. It does not consume the
// key; useAuthKey does, in the same transaction, once the node is admitted.
// Expiry is judged by the coordinator's clock alone: the client's clock never
// enters into it, so a skewed client can neither stretch nor shorten a key.
func (s *Store) checkAuthKey(ctx context.Context, tx *dbTx, key string) (AuthKey, error) {
	if !strings.HasPrefix(key, AuthKeyPrefix) {
		return AuthKey{}, ErrUnknownAuthKey
	}
	var (
		k       AuthKey
		expires sql.NullInt64
		revoked sql.NullInt64
		tags    string
		uses    int64
		maxUses sql.NullInt64
	)
	err := tx.QueryRowContext(ctx,
		`SELECT id, reusable, ephemeral, tags, expires_at, revoked_at, uses, max_uses FROM auth_keys WHERE key_hash = ?`,
		hashSecret(key)).Scan(&k.ID, &k.Reusable, &k.Ephemeral, &tags, &expires, &revoked, &uses, &maxUses)
	if errors.Is(err, sql.ErrNoRows) {
		return AuthKey{}, ErrUnknownAuthKey
	}
	if err != nil {
		return AuthKey{}, fmt.Errorf("look up auth key: %w", err)
	}
	if revoked.Valid {
		return AuthKey{}, ErrAuthKeyRevoked
	}
	if expires.Valid && !s.now().Before(fromMillis(expires)) {
		return AuthKey{}, ErrAuthKeyExpired
	}
	if !k.Reusable && uses > 0 {
		return AuthKey{}, ErrAuthKeyUsed
	}
	k.MaxUses = maxUses.Int64
	if k.MaxUses > 0 && uses >= k.MaxUses {
		return AuthKey{}, ErrAuthKeyUsedUp
	}
	k.Tags = splitTags(tags)
	k.ExpiresAt = fromMillis(expires)
	return k, nil
}

// useAuthKey records one use of the key. The WHERE clause re-checks
// single-use keys and the use cap, so even a racing transaction cannot use
// one more often than allowed.
func (s *Store) useAuthKey(ctx context.Context, tx *dbTx, id int64) error {
	res, err := tx.ExecContext(ctx,
		`UPDATE auth_keys SET uses = uses + 1, used_at = ? WHERE id = ? AND (reusable OR uses = 0) AND (max_uses IS NULL OR uses < max_uses)`,
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

// nullCount stores a count of 0 as NULL ("none").
func nullCount(n int64) sql.NullInt64 { return sql.NullInt64{Int64: n, Valid: n > 0} }

// hashSecret is how auth keys and credentials are stored: a secret of 32
// random bytes needs no salt or slow hash, and SHA-256 lets us look it up.
func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

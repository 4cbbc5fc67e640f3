package coordinator

import (
	"context"
	"errors"
	"fmt"
)

// Secrets that every coordinator on one database must share live in the
// PostgreSQL store (table secrets): the coordinator's X25519 identity key,
// against which nodes prove their keys, and the embedded TURN server's
// secret, with which relay credentials are minted. With SQLite they stay
// files in the state directory (identity.go, turncred.go).
const (
	secretIdentity = "coordinator_key"
	secretTURN     = "turn_secret"
)

// errNoSharedSecrets means the store keeps no secrets (SQLite).
var errNoSharedSecrets = errors.New("store keeps no secrets")

// sharesSecrets tells whether the store keeps the shared secrets.
func (s *Store) sharesSecrets() bool {
	return s.db.Eng.KeepsSecrets()
}

// sharedSecret returns the secret called name, storing fresh() first if
// there is none: the first coordinator to start makes it, the others read
// it (ON CONFLICT DO NOTHING settles a race).
func (s *Store) sharedSecret(ctx context.Context, name string, fresh func() (string, error)) (string, error) {
	if !s.sharesSecrets() {
		return "", errNoSharedSecrets
	}
	v, err := fresh()
	if err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, name, v); err != nil {
		return "", fmt.Errorf("store secret %s: %w", name, err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("read secret %s: %w", name, err)
	}
	return v, nil
}

// loadServerIdentity is the coordinator's key: from the store when it
// keeps secrets, else from the state directory.
func loadServerIdentity(ctx context.Context, st *Store, stateDir string) (*identity, error) {
	if !st.sharesSecrets() {
		return loadIdentity(stateDir)
	}
	v, err := st.sharedSecret(ctx, secretIdentity, newIdentityKey)
	if err != nil {
		return nil, fmt.Errorf("coordinator key: %w", err)
	}
	return parseIdentity("in the store's secrets table", v)
}

// loadServerTURNSecret is the embedded TURN server's secret: from the
// store when it keeps secrets, else from the state directory.
func loadServerTURNSecret(ctx context.Context, st *Store, stateDir string) ([]byte, error) {
	if !st.sharesSecrets() {
		return loadTURNSecret(stateDir)
	}
	v, err := st.sharedSecret(ctx, secretTURN, newTURNSecret)
	if err != nil {
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	if len(v) < 32 {
		return nil, errors.New("turn secret in the store's secrets table: too short, delete its row to make a new one")
	}
	return []byte(v), nil
}

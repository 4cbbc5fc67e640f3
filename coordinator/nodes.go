package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// nodeColumns are the columns scanNode reads, in order.
const nodeColumns = `id, name, ip, public_key, online, last_seen`

type rowScanner interface {
	Scan(dest ...any) error
}

func scanNode(row rowScanner) (control.Node, error) {
	var (
		n        control.Node
		lastSeen sql.NullInt64
	)
	if err := row.Scan(&n.ID, &n.Name, &n.IP, &n.PublicKey, &n.Online, &lastSeen); err != nil {
		return control.Node{}, err
	}
	n.LastSeen = fromMillis(lastSeen)
	return n, nil
}

// ListNodes returns every node, ordered by ID.
func (s *Store) ListNodes(ctx context.Context) ([]control.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var nodes []control.Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// AuthenticateNode returns the node a credential belongs to, or
// ErrBadCredential.
func (s *Store) AuthenticateNode(ctx context.Context, cred string) (control.Node, error) {
	id, err := credentialNodeID(cred)
	if err != nil {
		return control.Node{}, err
	}
	var (
		n        control.Node
		lastSeen sql.NullInt64
		hash     []byte
	)
	err = s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+`, credential_hash FROM nodes WHERE id = ?`, id).
		Scan(&n.ID, &n.Name, &n.IP, &n.PublicKey, &n.Online, &lastSeen, &hash)
	n.LastSeen = fromMillis(lastSeen)
	if errors.Is(err, sql.ErrNoRows) {
		return control.Node{}, ErrBadCredential
	}
	if err != nil {
		return control.Node{}, fmt.Errorf("authenticate node: %w", err)
	}
	if !credentialMatches(cred, hash) {
		return control.Node{}, ErrBadCredential
	}
	return n, nil
}

// SetOnline records that a node's stream came up or went away.
func (s *Store) SetOnline(ctx context.Context, id uint64, online bool, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE nodes SET online = ?, last_seen = ? WHERE id = ?`, online, toMillis(at), id)
	if err != nil {
		return fmt.Errorf("set node %d online=%v: %w", id, online, err)
	}
	return nil
}

// Touch moves a node's last_seen forward while its stream is alive.
func (s *Store) Touch(ctx context.Context, id uint64, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE nodes SET last_seen = ? WHERE id = ?`, toMillis(at), id)
	if err != nil {
		return fmt.Errorf("touch node %d: %w", id, err)
	}
	return nil
}

// ClearOnline marks every node offline. The server calls it at start and on
// clean shutdown: no stream exists at those moments, whatever the store says
// after a crash.
func (s *Store) ClearOnline(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET online = 0 WHERE online != 0`); err != nil {
		return fmt.Errorf("clear online flags: %w", err)
	}
	return nil
}

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
const nodeColumns = `id, name, ip, public_key, online, last_seen, tags`

// activeNode selects nodes that are members of the mesh: not expired.
const activeNode = `expired_at IS NULL`

type rowScanner interface {
	Scan(dest ...any) error
}

func scanNode(row rowScanner, extra ...any) (control.Node, error) {
	var (
		n        control.Node
		lastSeen sql.NullInt64
		tags     string
	)
	dest := append([]any{&n.ID, &n.Name, &n.IP, &n.PublicKey, &n.Online, &lastSeen, &tags}, extra...)
	if err := row.Scan(dest...); err != nil {
		return control.Node{}, err
	}
	n.LastSeen = fromMillis(lastSeen)
	n.Tags = splitTags(tags)
	return n, nil
}

// ListNodes returns every member of the mesh (expired nodes are not), ordered
// by ID.
func (s *Store) ListNodes(ctx context.Context) ([]control.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE `+activeNode+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var nodes []control.Node
	for rows.Next() {
		n, err := s.scanNode(rows)
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

// AuthenticateNode returns the node a credential belongs to. A credential
// that never was valid gets ErrBadCredential; one that was, but whose node
// an operator removed or expired, gets ErrNodeRemoved or ErrNodeExpired, so
// the agent can say why.
func (s *Store) AuthenticateNode(ctx context.Context, cred string) (control.Node, error) {
	n, _, err := s.nodeByCredential(ctx, s.db, cred)
	return n, err
}

// queryer is what *sqlDB and *dbTx share.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// nodeByCredential finds and checks the node of cred; with it comes whether
// the node is ephemeral.
func (s *Store) nodeByCredential(ctx context.Context, q queryer, cred string) (control.Node, bool, error) {
	id, err := credentialNodeID(cred)
	if err != nil {
		return control.Node{}, false, err
	}
	var (
		hash      []byte
		ephemeral bool
		expired   sql.NullInt64
	)
	n, err := s.scanNode(q.QueryRowContext(ctx, `SELECT `+nodeColumns+`, credential_hash, ephemeral, expired_at FROM nodes WHERE id = ?`, id),
		&hash, &ephemeral, &expired)
	if errors.Is(err, sql.ErrNoRows) {
		return control.Node{}, false, s.removedCredential(ctx, q, id, cred)
	}
	if err != nil {
		return control.Node{}, false, fmt.Errorf("authenticate node: %w", err)
	}
	if !credentialMatches(cred, hash) {
		return control.Node{}, false, ErrBadCredential
	}
	if expired.Valid {
		return control.Node{}, false, ErrNodeExpired
	}
	return n, ephemeral, nil
}

// removedCredential tells a removed node's own credential (ErrNodeRemoved)
// from any other unknown one (ErrBadCredential): only the holder of the
// secret learns that the node existed.
func (s *Store) removedCredential(ctx context.Context, q queryer, id uint64, cred string) error {
	var hash []byte
	err := q.QueryRowContext(ctx, `SELECT credential_hash FROM removed_nodes WHERE id = ?`, id).Scan(&hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrBadCredential
	case err != nil:
		return fmt.Errorf("authenticate node: %w", err)
	case credentialMatches(cred, hash):
		return ErrNodeRemoved
	}
	return ErrBadCredential
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

package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// Lifecycle failures. Like the auth key errors, their texts reach the agent
// or the operator as is.
var (
	ErrNodeRemoved           = errors.New(control.ReasonNodeRemoved)
	ErrNodeExpired           = errors.New(control.ReasonNodeExpired)
	ErrCredentialKeyMismatch = errors.New("credential does not belong to this public key")
	ErrNodeNotFound          = errors.New("no such node")
	ErrNameTaken             = errors.New("name is taken by another node")
	ErrAuthKeyNotFound       = errors.New("no such auth key")
	errBadName               = errors.New("not a valid node name")
)

// isCredentialRefusal tells the errors of a credential that cannot admit
// its holder (an auth key sent along may still do so).
func isCredentialRefusal(err error) bool {
	for _, e := range []error{ErrBadCredential, ErrNodeRemoved, ErrNodeExpired, ErrCredentialKeyMismatch} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// NodeRecord is a node as the operator sees it: what peers see plus the
// lifecycle fields.
type NodeRecord struct {
	control.Node
	Ephemeral bool      `json:"ephemeral"`
	CreatedAt time.Time `json:"created_at"`
	ExpiredAt time.Time `json:"expired_at,omitzero"` // zero: not expired
	AuthKeyID int64     `json:"auth_key_id,omitempty"`
}

// Expired tells whether an operator expired the node.
func (r NodeRecord) Expired() bool { return !r.ExpiredAt.IsZero() }

const recordColumns = nodeColumns + `, ephemeral, created_at, expired_at, auth_key_id`

func (s *Store) scanRecord(row rowScanner) (NodeRecord, error) {
	var (
		r       NodeRecord
		created int64
		expired sql.NullInt64
		keyID   sql.NullInt64
	)
	n, err := s.scanNode(row, &r.Ephemeral, &created, &expired, &keyID)
	if err != nil {
		return NodeRecord{}, err
	}
	r.Node = n
	r.CreatedAt = time.UnixMilli(created).UTC()
	r.ExpiredAt = fromMillis(expired)
	r.AuthKeyID = keyID.Int64
	return r, nil
}

// NodeRecords returns every node, expired ones included, ordered by ID.
func (s *Store) NodeRecords(ctx context.Context) ([]NodeRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+recordColumns+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []NodeRecord
	for rows.Next() {
		r, err := s.scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// FindNode looks a node up by ID, name or overlay IP, the ways an operator
// names one on the command line.
func (s *Store) FindNode(ctx context.Context, ref string) (NodeRecord, error) {
	return s.findNode(ctx, s.db, ref)
}

func (s *Store) findNode(ctx context.Context, q queryer, ref string) (NodeRecord, error) {
	var row *sql.Row
	if id, err := strconv.ParseUint(ref, 10, 63); err == nil {
		row = q.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM nodes WHERE id = ?`, id)
	} else if ip, err := netip.ParseAddr(ref); err == nil {
		ip = s.ip4Of(ip) // a node's IPv6 overlay address names it too
		row = q.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM nodes WHERE ip = ?`, ip.String())
	} else {
		row = q.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM nodes WHERE name = ?`, ref)
	}
	r, err := s.scanRecord(row)
	if errors.Is(err, sql.ErrNoRows) {
		return NodeRecord{}, fmt.Errorf("%w: %q", ErrNodeNotFound, ref)
	}
	if err != nil {
		return NodeRecord{}, fmt.Errorf("find node %q: %w", ref, err)
	}
	return r, nil
}

// RemoveNode deletes the node named by ref, leaving a tombstone that makes
// its credential fail with ErrNodeRemoved. Its name becomes free at once,
// its address after the hold-back (see freeIP).
func (s *Store) RemoveNode(ctx context.Context, ref, reason string) (NodeRecord, error) {
	var r NodeRecord
	err := s.inTx(ctx, func(tx *dbTx) error {
		var err error
		if r, err = s.findNode(ctx, tx, ref); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO removed_nodes (id, name, credential_hash, removed_at, reason)
			 SELECT id, name, credential_hash, CAST(? AS BIGINT), CAST(? AS TEXT) FROM nodes WHERE id = ?
			 ON CONFLICT (id) DO UPDATE SET name = excluded.name, credential_hash = excluded.credential_hash,
			 removed_at = excluded.removed_at, reason = excluded.reason`,
			toMillis(s.now()), reason, r.ID); err != nil {
			return fmt.Errorf("record removal: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE id = ?`, r.ID); err != nil {
			return fmt.Errorf("delete node: %w", err)
		}
		return s.holdIP(ctx, tx, r.IP)
	})
	if err != nil {
		return NodeRecord{}, fmt.Errorf("remove node: %w", err)
	}
	return r, nil
}

// ExpireNode marks the node named by ref expired as of now (the
// coordinator's clock). Its credential is refused with ErrNodeExpired until
// it joins again with an auth key; it keeps its name and address.
func (s *Store) ExpireNode(ctx context.Context, ref string) (NodeRecord, error) {
	var r NodeRecord
	err := s.inTx(ctx, func(tx *dbTx) error {
		var err error
		if r, err = s.findNode(ctx, tx, ref); err != nil {
			return err
		}
		if r.Expired() {
			return nil // expiring twice keeps the first time
		}
		now := s.now().UTC()
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET expired_at = ?, online = ? WHERE id = ?`, toMillis(now), false, r.ID); err != nil {
			return fmt.Errorf("mark expired: %w", err)
		}
		r.ExpiredAt = time.UnixMilli(toMillis(now)).UTC()
		r.Online = false
		return nil
	})
	if err != nil {
		return NodeRecord{}, fmt.Errorf("expire node: %w", err)
	}
	return r, nil
}

// RenameNode gives the node named by ref a new name, which must already be a
// valid DNS label and free.
func (s *Store) RenameNode(ctx context.Context, ref, name string) (NodeRecord, error) {
	if name == "" || sanitizeHostname(name) != name {
		return NodeRecord{}, fmt.Errorf("rename node: %w: %q (use lowercase letters, digits and '-', at most %d characters)", errBadName, name, maxNameLen)
	}
	var r NodeRecord
	err := s.inTx(ctx, func(tx *dbTx) error {
		var err error
		if r, err = s.findNode(ctx, tx, ref); err != nil {
			return err
		}
		if r.Name == name {
			return nil
		}
		var other uint64
		err = tx.QueryRowContext(ctx, `SELECT id FROM nodes WHERE name = ?`, name).Scan(&other)
		switch {
		case err == nil:
			return fmt.Errorf("%w: %q", ErrNameTaken, name)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("check name: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET name = ? WHERE id = ?`, name, r.ID); err != nil {
			return fmt.Errorf("update name: %w", err)
		}
		r.Name = name
		return nil
	})
	if err != nil {
		return NodeRecord{}, fmt.Errorf("rename node: %w", err)
	}
	return r, nil
}

// ephemeralMembers returns the IDs of the ephemeral members of the mesh.
func (s *Store) ephemeralMembers(ctx context.Context) ([]uint64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM nodes WHERE ephemeral AND `+activeNode)
	if err != nil {
		return nil, fmt.Errorf("list ephemeral nodes: %w", err)
	}
	defer rows.Close()
	var ids []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list ephemeral nodes: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list ephemeral nodes: %w", err)
	}
	return ids, nil
}

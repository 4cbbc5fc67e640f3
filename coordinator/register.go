package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshvpn/meshvpn/control"
)

// ErrPublicKeyInUse means a registration by auth key named a public key a
// node holds already, without proof of holding its private key.
var ErrPublicKeyInUse = errors.New("public key belongs to a registered node; re-admitting it needs proof of its private key")

// Registration is the outcome of admitting a node.
type Registration struct {
	Node       control.Node
	Credential string
	// Created is true for a new node, false for a re-admitted one.
	Created bool
	// Ephemeral nodes are removed once offline for a while.
	Ephemeral bool
}

// Register admits a node. A valid credential wins; a node whose credential
// is stale (say the coordinator's state was restored from an old backup) may
// send an auth key along with it and is then admitted by the key.
//
// Register treats the request as carrying no proof of key possession, so
// an auth key admits only new public keys; the server verifies proofs and
// calls register.
func (s *Store) Register(ctx context.Context, req control.RegisterRequest) (Registration, error) {
	return s.register(ctx, req, false)
}

// register is Register; proven says the caller verified that the sender
// holds req.PublicKey's private key.
func (s *Store) register(ctx context.Context, req control.RegisterRequest, proven bool) (Registration, error) {
	if req.Credential != "" {
		reg, err := s.registerWithCredential(ctx, req)
		if err == nil || !isCredentialRefusal(err) || req.AuthKey == "" {
			return reg, err
		}
	}
	return s.registerWithAuthKey(ctx, req, proven)
}

// registerWithAuthKey admits by auth key. A known public key re-admits its
// node (same ID, name and address, new credential) only when proven: every
// member sees every public key, so without proof of the private key this
// would hand any key holder another node's identity. An unknown public key
// creates a node. The auth key is consumed in the same transaction, so a
// single-use key admits exactly one node even under concurrent requests.
func (s *Store) registerWithAuthKey(ctx context.Context, req control.RegisterRequest, proven bool) (Registration, error) {
	var reg Registration
	err := s.inTx(ctx, func(tx *dbTx) error {
		key, err := s.checkAuthKey(ctx, tx, req.AuthKey)
		if err != nil {
			return err
		}
		node, err := s.scanNode(tx.QueryRowContext(ctx,
			`SELECT `+nodeColumns+` FROM nodes WHERE public_key = ?`, req.PublicKey))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			node, err = s.createNode(ctx, tx, req, key.ID)
			if err != nil {
				return err
			}
			reg.Created = true
		case err != nil:
			return fmt.Errorf("look up public key: %w", err)
		case !proven:
			return ErrPublicKeyInUse
		}
		cred, err := newCredential(node.ID)
		if err != nil {
			return err
		}
		// A re-admitted node takes the new key's tags and ephemerality and
		// is no longer expired: the operator's key vouches for it afresh.
		// Its old credential stops working here (a replay of it is refused).
		if _, err := tx.ExecContext(ctx,
			`UPDATE nodes SET credential_hash = ?, tags = ?, ephemeral = ?, expired_at = NULL, auth_key_id = ? WHERE id = ?`,
			hashSecret(cred), joinTags(key.Tags), key.Ephemeral, key.ID, node.ID); err != nil {
			return fmt.Errorf("store credential: %w", err)
		}
		if err := s.useAuthKey(ctx, tx, key.ID); err != nil {
			return err
		}
		node.Tags = key.Tags
		reg.Node, reg.Credential, reg.Ephemeral = node, cred, key.Ephemeral
		return nil
	})
	if err != nil {
		return Registration{}, fmt.Errorf("register node: %w", err)
	}
	return reg, nil
}

// createNode inserts a node with a unique name and the first free address.
// Its credential hash is set by the caller once the ID is known.
func (s *Store) createNode(ctx context.Context, tx *dbTx, req control.RegisterRequest, keyID int64) (control.Node, error) {
	name, err := uniqueName(ctx, tx, sanitizeHostname(req.Hostname))
	if err != nil {
		return control.Node{}, err
	}
	ip, err := s.freeIP(ctx, tx)
	if err != nil {
		return control.Node{}, err
	}
	var id int64
	err = tx.QueryRowContext(ctx,
		`INSERT INTO nodes (name, ip, public_key, credential_hash, auth_key_id, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		name, ip.String(), req.PublicKey, []byte{}, keyID, toMillis(s.now())).Scan(&id)
	if err != nil {
		return control.Node{}, fmt.Errorf("insert node: %w", err)
	}
	return s.withIP6(control.Node{ID: uint64(id), Name: name, IP: ip.String(), PublicKey: req.PublicKey}), nil
}

// uniqueName picks base, base-2, base-3, … whichever is free first.
func uniqueName(ctx context.Context, tx *dbTx, base string) (string, error) {
	// Every name starting with the prefix: a range on the name index (names
	// are [a-z0-9-], all below 0x7f, and compared bytewise on both engines),
	// where a LIKE scanned every row and made registering N nodes quadratic.
	prefix := base[:min(len(base), 40)]
	rows, err := tx.QueryContext(ctx, `SELECT name FROM nodes WHERE name >= ? AND name < ?`, prefix, prefix+"\x7f")
	if err != nil {
		return "", fmt.Errorf("pick name: %w", err)
	}
	defer rows.Close()
	taken := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return "", fmt.Errorf("pick name: %w", err)
		}
		taken[n] = true
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("pick name: %w", err)
	}
	for i := 1; ; i++ {
		if c := nameCandidate(base, i); !taken[c] {
			return c, nil
		}
	}
}

// registerWithCredential re-admits a node by its credential. The credential
// is bound to the node's WireGuard public key: presented with another key it
// is refused (a node that changes its key joins again with an auth key). The
// presented credential stays valid and is returned as is.
func (s *Store) registerWithCredential(ctx context.Context, req control.RegisterRequest) (Registration, error) {
	// Only reads: no write transaction, so re-admissions do not queue
	// behind the store's write lock.
	node, ephemeral, err := s.nodeByCredential(ctx, s.db, req.Credential)
	if err == nil && req.PublicKey != node.PublicKey {
		err = ErrCredentialKeyMismatch
	}
	if err != nil {
		return Registration{}, fmt.Errorf("register node: %w", err)
	}
	return Registration{Node: node, Credential: req.Credential, Ephemeral: ephemeral}, nil
}

package coordinator

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// Replicas: several coordinators on one PostgreSQL database tell each other
// what changed with NOTIFY on one channel (see replica.go). The store sends
// the notifications of the changes it writes, in the same transaction, so
// they are delivered exactly when the change is visible to every replica,
// whoever made it: a replica, or an admin command writing the store
// directly. SQLite keeps one process and sends nothing.

// notifyChannel is the LISTEN/NOTIFY channel of the replicas.
const notifyChannel = "meshvpn"

// maxNotifyPayload stays under PostgreSQL's 8000-byte NOTIFY limit.
const maxNotifyPayload = 7900

// notifyAllOver is the batch size past which a notification says "reload
// everything" instead of listing node IDs (a reconnect storm).
const notifyAllOver = 2000

// Notification kinds: the first word of a payload; the second is the
// sending replica ("-" for an admin command).
const (
	noteNodes  = "n" // n REPLICA ID,ID,…: reload these nodes
	noteAll    = "a" // a REPLICA: reload every node
	notePolicy = "p" // p REPLICA: reload the policy
	noteSignal = "s" // s REPLICA FROM TO FRAME: deliver a signal frame to node TO
	noteOffer  = "o" // o REPLICA NODE ADDR: node offers its peer relay at ADDR ("-": withdrawn)
)

// pgNowMillis is the database's clock in Unix milliseconds: times that
// replicas compare come from one clock.
const pgNowMillis = `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)`

// changedSince returns the nodes whose online state changed at or after
// the database time at (Unix milliseconds).
func (s *Store) changedSince(ctx context.Context, at int64) ([]uint64, error) {
	return s.queryIDs(ctx, `SELECT id FROM nodes WHERE changed_at >= ? ORDER BY id`, at)
}

// seenFrom returns where the online nodes' streams come from.
func (s *Store) seenFrom(ctx context.Context) (map[uint64]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, seen_from FROM nodes WHERE online AND seen_from IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("load stream addresses: %w", err)
	}
	defer rows.Close()
	out := map[uint64]string{}
	for rows.Next() {
		var id uint64
		var from string
		if err := rows.Scan(&id, &from); err != nil {
			return nil, fmt.Errorf("load stream addresses: %w", err)
		}
		out[id] = from
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load stream addresses: %w", err)
	}
	return out, nil
}

// heldBy returns the nodes online through replica's streams.
func (s *Store) heldBy(ctx context.Context, replica string) ([]uint64, error) {
	return s.queryIDs(ctx, `SELECT id FROM nodes WHERE online AND replica = ? ORDER BY id`, replica)
}

func (s *Store) queryIDs(ctx context.Context, q string, args ...any) ([]uint64, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var ids []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return ids, nil
}

// execer is what *store.DB and *dbTx share for writes.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// fansOut tells whether changes are announced to other replicas.
func (s *Store) fansOut() bool { return s.db.Eng.FansOut() }

// replicaTag is this process's name in the notifications it sends.
func (s *Store) replicaTag() string {
	if s.replica == "" {
		return "-"
	}
	return s.replica
}

// notify sends one payload on the replicas' channel, in q's transaction if
// q is one.
func (s *Store) notify(ctx context.Context, q execer, payload string) error {
	if _, err := q.ExecContext(ctx, `SELECT pg_notify(?, ?)`, notifyChannel, payload); err != nil {
		return fmt.Errorf("notify replicas: %w", err)
	}
	return nil
}

// announceNodes tells the other replicas to reload ids (nothing without
// fan-out). Many IDs are split over several notifications; very many make
// one "reload everything".
func (s *Store) announceNodes(ctx context.Context, q execer, ids []uint64) error {
	if !s.fansOut() || len(ids) == 0 {
		return nil
	}
	head := noteNodes + " " + s.replicaTag() + " "
	if len(ids) > notifyAllOver {
		return s.notify(ctx, q, noteAll+" "+s.replicaTag())
	}
	var b strings.Builder
	for i, id := range ids {
		if b.Len() == 0 {
			b.WriteString(head)
		} else {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(id, 10))
		if b.Len() > maxNotifyPayload-21 || i == len(ids)-1 {
			if err := s.notify(ctx, q, b.String()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	return nil
}

// announcePolicy tells the other replicas the policy changed.
func (s *Store) announcePolicy(ctx context.Context, q execer) error {
	if !s.fansOut() {
		return nil
	}
	return s.notify(ctx, q, notePolicy+" "+s.replicaTag())
}

// nodesByID reads the nodes ids (expired ones too); IDs not returned were
// deleted.
func (s *Store) nodesByID(ctx context.Context, ids []uint64) ([]hub.StoredNode, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var in strings.Builder
	for i, id := range ids {
		if i > 0 {
			in.WriteByte(',')
		}
		in.WriteString(strconv.FormatUint(id, 10)) // numbers we parsed: safe to inline
	}
	return s.queryStored(ctx, `SELECT `+nodeColumns+`, expired_at IS NOT NULL, ephemeral, COALESCE(seen_from, '') FROM nodes WHERE id IN (`+in.String()+`) ORDER BY id`)
}

// allStored reads every node (expired ones too).
func (s *Store) allStored(ctx context.Context) ([]hub.StoredNode, error) {
	return s.queryStored(ctx, `SELECT `+nodeColumns+`, expired_at IS NOT NULL, ephemeral, COALESCE(seen_from, '') FROM nodes ORDER BY id`)
}

func (s *Store) queryStored(ctx context.Context, q string) ([]hub.StoredNode, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("load nodes: %w", err)
	}
	defer rows.Close()
	var out []hub.StoredNode
	for rows.Next() {
		var sn hub.StoredNode
		var from string
		if sn.Node, err = s.scanNode(rows, &sn.Expired, &sn.Ephemeral, &from); err != nil {
			return nil, fmt.Errorf("load nodes: %w", err)
		}
		sn.SeenFrom = from
		out = append(out, sn)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load nodes: %w", err)
	}
	return out, nil
}

// heartbeat records that this replica is alive.
func (s *Store) heartbeat(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO replicas (id, seen_at) VALUES (?, ?)
		ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, s.replica, toMillis(s.now()))
	if err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	return nil
}

// sweepDeadReplicas marks offline the nodes that replicas silent for
// longer than dead held (a killed replica leaves its nodes online), tells
// the others, and returns their IDs. Forgotten replicas' rows go too.
func (s *Store) sweepDeadReplicas(ctx context.Context, dead time.Duration) ([]uint64, error) {
	cutoff := toMillis(s.now().Add(-dead))
	var ids []uint64
	err := s.inTx(ctx, func(tx *dbTx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE nodes SET online = false, changed_at = `+pgNowMillis+` WHERE online AND
			(replica IS NULL OR replica NOT IN (SELECT id FROM replicas WHERE seen_at >= ?)) RETURNING id`, cutoff)
		if err != nil {
			return fmt.Errorf("sweep nodes of dead replicas: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id uint64
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("sweep nodes of dead replicas: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sweep nodes of dead replicas: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE seen_at < ?`, toMillis(s.now().Add(-time.Hour))); err != nil {
			return fmt.Errorf("forget old replicas: %w", err)
		}
		return s.announceNodes(ctx, tx, ids)
	})
	return ids, err
}

// claimChallenge uses up a challenge nonce for every replica: false if
// one already did. Expired nonces are pruned along the way.
func (s *Store) claimChallenge(ctx context.Context, nonce []byte, exp time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO used_challenges (nonce, expires_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING`,
		nonce, toMillis(exp))
	if err != nil {
		return false, fmt.Errorf("claim challenge: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim challenge: %w", err)
	}
	return n == 1, nil
}

// pruneChallenges forgets used challenges that expired.
func (s *Store) pruneChallenges(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM used_challenges WHERE expires_at < ?`, toMillis(s.now())); err != nil {
		return fmt.Errorf("prune challenges: %w", err)
	}
	return nil
}

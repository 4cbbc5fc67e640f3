package coordinator

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// saveSeen writes a batch of online flags and last-seen times in one
// transaction: with thousands of streams, one write per connect, disconnect
// and ping would keep the store busy for nothing.
// version, when not nil, is stored with them: the version of the batch
// about to be sent, whose online flags these are.
//
// With replicas (fan-out), a node going online is written with this
// replica's name and the address it came from, and going offline only if
// no other replica has taken the node since: a stream this replica still
// held may end after the agent moved. Those nodes come back as stale, for
// the caller to reload. The online changes are announced to the others in
// the same transaction.
func (s *Store) saveSeen(ctx context.Context, seen map[uint64]hub.Seen, version *netmapVersion) (stale []uint64, err error) {
	err = s.inTx(ctx, func(tx *dbTx) error {
		stale = stale[:0]
		if version != nil {
			if err := s.saveNetmapVersion(ctx, tx, *version); err != nil {
				return err
			}
		}
		up, down := `UPDATE nodes SET online = ?, last_seen = ? WHERE id = ?`, `UPDATE nodes SET online = ?, last_seen = ? WHERE id = ?`
		if s.fansOut() {
			// changed_at dates what peers see (the online flag and the
			// address), for resumes (hub/replica_resume.go): an agent
			// moving to this replica from the address it had is no
			// change. Dating every move made a fail-over of more than
			// half the mesh send everyone after that half a full netmap.
			up = `UPDATE nodes SET online = ?, last_seen = ?, replica = ?, seen_from = ?,
				changed_at = CASE WHEN online AND seen_from IS NOT DISTINCT FROM ? THEN changed_at ELSE ` + pgNowMillis + ` END WHERE id = ?`
			down = `UPDATE nodes SET online = ?, last_seen = ?, changed_at = CASE WHEN online THEN ` + pgNowMillis + ` ELSE changed_at END
				WHERE id = ? AND (replica IS NULL OR replica = ?)`
		}
		setUp, err := tx.PrepareContext(ctx, up)
		if err != nil {
			return fmt.Errorf("save online state: %w", err)
		}
		defer setUp.Close()
		setDown, err := tx.PrepareContext(ctx, down)
		if err != nil {
			return fmt.Errorf("save online state: %w", err)
		}
		defer setDown.Close()
		touch, err := tx.PrepareContext(ctx, `UPDATE nodes SET last_seen = ? WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("save online state: %w", err)
		}
		defer touch.Close()
		var changed []uint64
		for _, id := range slices.Sorted(maps.Keys(seen)) {
			v := seen[id]
			switch {
			case v.Touch:
				_, err = touch.ExecContext(ctx, toMillis(v.LastSeen), id)
			case !s.fansOut() && v.Online:
				_, err = setUp.ExecContext(ctx, v.Online, toMillis(v.LastSeen), id)
			case v.Online:
				_, err = setUp.ExecContext(ctx, v.Online, toMillis(v.LastSeen), s.replica, v.From, v.From, id)
			case !s.fansOut():
				_, err = setDown.ExecContext(ctx, v.Online, toMillis(v.LastSeen), id)
			default:
				var n int64
				res, e := setDown.ExecContext(ctx, v.Online, toMillis(v.LastSeen), id, s.replica)
				if err = e; err == nil {
					if n, err = res.RowsAffected(); err == nil && n == 0 {
						stale = append(stale, id)
						continue
					}
				}
			}
			if err != nil {
				return fmt.Errorf("save online state of node %d: %w", id, err)
			}
			if !v.Touch {
				changed = append(changed, id)
			}
		}
		return s.announceNodes(ctx, tx, changed)
	})
	return stale, err
}

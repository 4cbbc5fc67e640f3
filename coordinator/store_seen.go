package coordinator

import (
	"context"
	"fmt"
)

// saveSeen writes a batch of online flags and last-seen times in one
// transaction: with thousands of streams, one write per connect, disconnect
// and ping would keep the store busy for nothing.
// version, when not nil, is stored with them: the version of the batch
// about to be sent, whose online flags these are.
func (s *Store) saveSeen(ctx context.Context, seen map[uint64]nodeSeen, version *netmapVersion) error {
	return s.inTx(ctx, func(tx *dbTx) error {
		if version != nil {
			if err := saveNetmapVersion(ctx, tx, *version); err != nil {
				return err
			}
		}
		setOnline, err := tx.PrepareContext(ctx, `UPDATE nodes SET online = ?, last_seen = ? WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("save online state: %w", err)
		}
		defer setOnline.Close()
		touch, err := tx.PrepareContext(ctx, `UPDATE nodes SET last_seen = ? WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("save online state: %w", err)
		}
		defer touch.Close()
		for id, v := range seen {
			if v.touch {
				_, err = touch.ExecContext(ctx, toMillis(v.lastSeen), id)
			} else {
				_, err = setOnline.ExecContext(ctx, v.online, toMillis(v.lastSeen), id)
			}
			if err != nil {
				return fmt.Errorf("save online state of node %d: %w", id, err)
			}
		}
		return nil
	})
}

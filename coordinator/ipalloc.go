package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// errPoolExhausted means every overlay address is taken.
var errPoolExhausted = errors.New("overlay address pool exhausted")

// DefaultIPHoldback is how long a removed node's overlay address is held
// back before another node may get it.
const DefaultIPHoldback = 24 * time.Hour

// firstFree returns the first address of prefix at or above from (the
// first host address when from is outside it) that taken says is free. It
// skips the network address, the last address of the prefix, which some
// stacks treat as broadcast, and control.ResolverAddr, every agent's own
// DNS resolver. Addresses are never recycled while their node
// exists, so a node keeps its address for life.
func firstFree(prefix netip.Prefix, from netip.Addr, taken func(netip.Addr) (bool, error)) (netip.Addr, error) {
	prefix = prefix.Masked()
	a := from
	if !a.IsValid() || !prefix.Contains(a) || a == prefix.Addr() {
		a = prefix.Addr().Next()
	}
	for ; a.IsValid() && prefix.Contains(a); a = a.Next() {
		next := a.Next()
		if !next.IsValid() || !prefix.Contains(next) {
			break // a is the last address
		}
		if a == control.ResolverAddr {
			continue
		}
		used, err := taken(a)
		if err != nil {
			return netip.Addr{}, err
		}
		if !used {
			return a, nil
		}
	}
	return netip.Addr{}, errPoolExhausted
}

// ipHint remembers the lowest address that may be free, so that allocating
// the Nth address costs a point lookup or two on the ip index instead of
// reading all N-1 taken ones (registering 10,000 nodes was quadratic).
// It lives in the server process only; a fresh process starts from the
// bottom of the prefix and walks up once. Addresses freed by removing a
// node are not found by the walk: they wait in held_ips (see freeIP).
type ipHint struct {
	mu   sync.Mutex
	next netip.Addr
}

// freeIP allocates an overlay address: the longest-released address whose
// hold-back is over, else the first never-used one at or above the hint.
// A removed node's address is held back (held_ips) so that peers' rules for
// it do not pass at once to a stranger. freeIP runs inside the registration
// transaction; if that is rolled back the address is simply free again.
//
// It first checks the mesh has room for one more node (nodeCap): inside
// the transaction, so concurrent joins cannot overshoot the cap.
func (s *Store) freeIP(ctx context.Context, tx *dbTx) (netip.Addr, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM nodes`).Scan(&n); err != nil {
		return netip.Addr{}, fmt.Errorf("count nodes: %w", err)
	}
	if n >= s.nodeCap() {
		return netip.Addr{}, errMeshFull
	}
	cutoff := toMillis(s.now().Add(-s.holdback()))
	var held string
	err := tx.QueryRowContext(ctx,
		`SELECT h.ip FROM held_ips h WHERE h.released_at <= ?
		 AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.ip = h.ip)
		 ORDER BY h.released_at LIMIT 1`, cutoff).Scan(&held)
	switch {
	case err == nil:
		if _, err := tx.ExecContext(ctx, `DELETE FROM held_ips WHERE ip = ?`, held); err != nil {
			return netip.Addr{}, fmt.Errorf("allocate address: %w", err)
		}
		if a, err := netip.ParseAddr(held); err == nil && control.OverlayPrefix.Contains(a) && a != control.ResolverAddr {
			return a, nil
		}
		// Not an address of ours (a damaged row): dropped, take a new one.
	case !errors.Is(err, sql.ErrNoRows):
		return netip.Addr{}, fmt.Errorf("allocate address: %w", err)
	}

	s.ipHint.mu.Lock()
	defer s.ipHint.mu.Unlock()
	a, err := firstFree(control.OverlayPrefix, s.ipHint.next, func(a netip.Addr) (bool, error) {
		var one int
		err := tx.QueryRowContext(ctx,
			`SELECT 1 FROM nodes WHERE ip = ?1 UNION ALL SELECT 1 FROM held_ips WHERE ip = ?1 LIMIT 1`,
			a.String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate address: %w", err)
	}
	s.ipHint.next = a
	return a, nil
}

// SetIPHoldback sets how long removed nodes' addresses are held back; zero
// or less hands them out again at once.
func (s *Store) SetIPHoldback(d time.Duration) {
	s.ipHint.mu.Lock()
	defer s.ipHint.mu.Unlock()
	s.ipHoldback = max(d, 0)
}

func (s *Store) holdback() time.Duration {
	s.ipHint.mu.Lock()
	defer s.ipHint.mu.Unlock()
	return s.ipHoldback
}

// holdIP records that a removed node's address was released now.
func (s *Store) holdIP(ctx context.Context, tx *dbTx, ip string) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO held_ips (ip, released_at) VALUES (?, ?)
		ON CONFLICT (ip) DO UPDATE SET released_at = excluded.released_at`, ip, toMillis(s.now())); err != nil {
		return fmt.Errorf("hold address: %w", err)
	}
	return nil
}

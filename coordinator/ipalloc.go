package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/meshvpn/meshvpn/control"
)

// errPoolExhausted means every overlay address is taken.
var errPoolExhausted = errors.New("overlay address pool exhausted")

// firstFree returns the first address of prefix at or above from (the
// first host address when from is outside it) that taken says is free. It
// skips the network address and the last address of the prefix, which some
// stacks treat as broadcast. Addresses are never recycled while their node
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
// bottom of the prefix and walks up once. An address freed by removing a
// node below the hint is reused after the next restart.
type ipHint struct {
	mu   sync.Mutex
	next netip.Addr
}

// freeIP allocates the first unused overlay address at or above the hint.
// It runs inside the registration transaction; if that transaction is rolled
// back the address is simply found free again next time.
//
// It first checks the mesh has room for one more node (nodeCap): inside
// the transaction, so concurrent joins cannot overshoot the cap.
func (s *Store) freeIP(ctx context.Context, tx *sql.Tx) (netip.Addr, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM nodes`).Scan(&n); err != nil {
		return netip.Addr{}, fmt.Errorf("count nodes: %w", err)
	}
	if n >= s.nodeCap() {
		return netip.Addr{}, errMeshFull
	}
	s.ipHint.mu.Lock()
	defer s.ipHint.mu.Unlock()
	a, err := firstFree(control.OverlayPrefix, s.ipHint.next, func(a netip.Addr) (bool, error) {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM nodes WHERE ip = ?`, a.String()).Scan(&one)
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

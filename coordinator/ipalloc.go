package coordinator

import (
	"errors"
	"net/netip"
)

// errPoolExhausted means every overlay address is taken.
var errPoolExhausted = errors.New("overlay address pool exhausted")

// allocateIP returns the first address of prefix not in used, starting at the
// first host address. It skips the network address and the last address of
// the prefix, which some stacks treat as broadcast. Addresses are never
// recycled while their node exists, so a node keeps its address for life.
func allocateIP(prefix netip.Prefix, used map[netip.Addr]bool) (netip.Addr, error) {
	prefix = prefix.Masked()
	for a := prefix.Addr().Next(); a.IsValid() && prefix.Contains(a); a = a.Next() {
		next := a.Next()
		if !next.IsValid() || !prefix.Contains(next) {
			break // a is the last address
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, errPoolExhausted
}

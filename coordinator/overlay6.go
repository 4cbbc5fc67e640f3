package coordinator

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/meshvpn/meshvpn/control"
)

// meshSettingsTable holds settings of the mesh as a whole (name, value),
// shared by every coordinator on one store.
const meshSettingsTable = `CREATE TABLE mesh_settings (
		name  TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`

// settingPrefix6 names the mesh's IPv6 overlay prefix (an RFC 4193 /48).
const settingPrefix6 = "overlay_prefix6"

// loadOverlayPrefix6 reads the mesh's IPv6 overlay prefix, drawing one
// when the store has none (a new store, or one made before IPv6). ON
// CONFLICT DO NOTHING settles two coordinators opening one new database at
// once: the first prefix written is every replica's.
func (s *Store) loadOverlayPrefix6(ctx context.Context) error {
	fresh, err := control.NewULAPrefix()
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO mesh_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
		settingPrefix6, fresh.String()); err != nil {
		return fmt.Errorf("store IPv6 overlay prefix: %w", err)
	}
	var v string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM mesh_settings WHERE name = ?`, settingPrefix6).Scan(&v); err != nil {
		return fmt.Errorf("read IPv6 overlay prefix: %w", err)
	}
	p, err := netip.ParsePrefix(v)
	if err != nil || !control.ValidULAPrefix(p) {
		return fmt.Errorf("IPv6 overlay prefix %q in the store is not a ULA /48", v)
	}
	s.prefix6 = p
	return nil
}

// OverlayPrefix6 is the mesh's IPv6 overlay prefix, a ULA /48 that stays
// the mesh's for the life of the store.
func (s *Store) OverlayPrefix6() netip.Prefix { return s.prefix6 }

// withIP6 fills in n's IPv6 overlay address, derived from its IPv4 one.
func (s *Store) withIP6(n control.Node) control.Node {
	if ip, err := netip.ParseAddr(n.IP); err == nil {
		if a := control.OverlayAddr6(s.prefix6, ip); a.IsValid() {
			n.IP6 = a.String()
		}
	}
	return n
}

// scanNode reads a node row (nodeColumns, then extra) with its IPv6
// overlay address filled in.
func (s *Store) scanNode(row rowScanner, extra ...any) (control.Node, error) {
	n, err := scanNode(row, extra...)
	if err != nil {
		return n, err
	}
	return s.withIP6(n), nil
}

// ip4Of is the IPv4 overlay address an IPv6 overlay address of this mesh
// was derived from; other addresses are returned as they are.
func (s *Store) ip4Of(ip netip.Addr) netip.Addr {
	if !ip.Is6() || !s.prefix6.Contains(ip) {
		return ip
	}
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[12:]))
}

// Package meshdns is the agent's DNS resolver: it answers for the mesh's
// names (NAME.<domain>) from the netmap and forwards every other query to
// the resolvers the host used before. It speaks DNS through
// golang.org/x/net/dns/dnsmessage; nothing here parses DNS by hand.
package meshdns

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshvpn/meshvpn/control"
)

// Record is one node's name (a single DNS label) and overlay addresses.
type Record struct {
	Name string
	IP   netip.Addr
	// IP6 is the node's IPv6 overlay address (zero: none, no AAAA).
	IP6 netip.Addr
}

// table is one immutable view of the mesh's names; a netmap change swaps
// in a new one.
type table struct {
	domain string // lowercase, no trailing dot
	byName map[string]Record
	byIP   map[netip.Addr]string
	// ula holds the /48s of the IPv6 overlay addresses: reverse names in
	// them are the mesh's to answer.
	ula []netip.Prefix
}

// newTable builds a view. Names that are not one valid label are left out
// (the coordinator sanitises them; this is the second line), as are
// records without an IPv4 address and IPv6 ones outside fd00::/8; of two
// records with one name the first wins.
func newTable(domain string, recs []Record) *table {
	t := &table{domain: domain, byName: make(map[string]Record, len(recs)), byIP: make(map[netip.Addr]string, 2*len(recs))}
	for _, r := range recs {
		name := strings.ToLower(r.Name)
		if !control.ValidDNSLabel(name) || !r.IP.Is4() {
			continue
		}
		if _, dup := t.byName[name]; dup {
			continue
		}
		if !r.IP6.Is6() || !control.ULARange.Contains(r.IP6) {
			r.IP6 = netip.Addr{}
		}
		t.byName[name] = r
		for _, ip := range []netip.Addr{r.IP, r.IP6} {
			if _, dup := t.byIP[ip]; ip.IsValid() && !dup {
				t.byIP[ip] = name
			}
		}
		if r.IP6.IsValid() {
			if p := netip.PrefixFrom(r.IP6, control.ULABits).Masked(); !slices.Contains(t.ula, p) {
				t.ula = append(t.ula, p)
			}
		}
	}
	return t
}

// overlay tells whether ip is an overlay address, whose reverse name the
// mesh answers for.
func (t *table) overlay(ip netip.Addr) bool {
	if ip.Is4() {
		return control.OverlayPrefix.Contains(ip)
	}
	return slices.ContainsFunc(t.ula, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// FQDN is name's fully qualified form in domain, without the final dot.
func FQDN(name, domain string) string { return name + "." + domain }

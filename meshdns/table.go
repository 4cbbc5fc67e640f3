// Package meshdns is the agent's DNS resolver: it answers for the mesh's
// names (NAME.<domain>) from the netmap and forwards every other query to
// the resolvers the host used before. It speaks DNS through
// golang.org/x/net/dns/dnsmessage; nothing here parses DNS by hand.
package meshdns

import (
	"net/netip"
	"strings"

	"github.com/meshvpn/meshvpn/control"
)

// Record is one node's name (a single DNS label) and overlay address.
type Record struct {
	Name string
	IP   netip.Addr
}

// table is one immutable view of the mesh's names; a netmap change swaps
// in a new one.
type table struct {
	domain string // lowercase, no trailing dot
	byName map[string]netip.Addr
	byIP   map[netip.Addr]string
}

// newTable builds a view. Names that are not one valid label are left out
// (the coordinator sanitises them; this is the second line), as are
// non-IPv4 addresses; of two records with one name the first wins.
func newTable(domain string, recs []Record) *table {
	t := &table{domain: domain, byName: make(map[string]netip.Addr, len(recs)), byIP: make(map[netip.Addr]string, len(recs))}
	for _, r := range recs {
		name := strings.ToLower(r.Name)
		if !control.ValidDNSLabel(name) || !r.IP.Is4() {
			continue
		}
		if _, dup := t.byName[name]; dup {
			continue
		}
		t.byName[name] = r.IP
		if _, dup := t.byIP[r.IP]; !dup {
			t.byIP[r.IP] = name
		}
	}
	return t
}

// FQDN is name's fully qualified form in domain, without the final dot.
func FQDN(name, domain string) string { return name + "." + domain }

package control

import (
	"fmt"
	"net/netip"
	"strings"
)

// ResolverAddr is the overlay address of every agent's own DNS resolver.
// It lies inside OverlayPrefix, so the coordinator never gives it to a node.
var ResolverAddr = netip.MustParseAddr("100.100.100.100")

// DefaultDNSDomain is the mesh's DNS domain unless the coordinator is told
// otherwise; .internal is reserved for private use (ICANN, 2024).
const DefaultDNSDomain = "mesh.internal"

// DNSConfig is the naming part of a netmap: every node is NAME.Domain.
type DNSConfig struct {
	Domain string `json:"domain"`
}

// maxDomainLen leaves room under DNS's 253-character limit for a node name
// (63) and its dot.
const maxDomainLen = 253 - 64

// NormalizeDNSDomain checks a mesh domain and returns it lowercased without
// a trailing dot. Each label is [a-z0-9-], 1-63 characters, no '-' at
// either end. Domains whose names other resolvers own are refused: .local
// (multicast DNS) and .arpa (reverse lookups).
func NormalizeDNSDomain(s string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(s), ".")
	if d == "" {
		return "", fmt.Errorf("DNS domain is empty")
	}
	if len(d) > maxDomainLen {
		return "", fmt.Errorf("DNS domain longer than %d characters", maxDomainLen)
	}
	for _, label := range strings.Split(d, ".") {
		if !ValidDNSLabel(label) {
			return "", fmt.Errorf("DNS domain %q: label %q is not 1-63 of [a-z0-9-] without a leading or trailing '-'", s, label)
		}
	}
	last := d[strings.LastIndexByte(d, '.')+1:]
	if last == "local" || last == "arpa" {
		return "", fmt.Errorf("DNS domain %q: .%s belongs to another resolver", s, last)
	}
	return d, nil
}

// ValidDNSLabel tells whether s is one lowercase DNS label as the
// coordinator makes node names: [a-z0-9-], 1-63, no '-' at either end.
func ValidDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

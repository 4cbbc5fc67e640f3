package coordinator

import (
	"strconv"
	"strings"
)

// maxNameLen is the longest DNS label; names may become DNS names later.
const maxNameLen = 63

// sanitizeHostname turns a client-chosen hostname into a DNS label:
// lowercase [a-z0-9-], no leading or trailing '-', at most 63 characters.
// Only the first label of a dotted name is kept ("laptop.local" → "laptop").
// An empty result becomes "node".
func sanitizeHostname(h string) string {
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		default:
			// Any other character (including '-', '_', spaces, non-ASCII)
			// becomes one '-', and runs of them collapse.
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
		}
		if b.Len() >= maxNameLen {
			break
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > maxNameLen {
		name = strings.TrimRight(name[:maxNameLen], "-")
	}
	if name == "" {
		return "node"
	}
	return name
}

// nameCandidate is the n-th choice for base: base, base-2, base-3, …,
// shortening base so the result stays a valid label.
func nameCandidate(base string, n int) string {
	if n <= 1 {
		return base
	}
	suffix := "-" + strconv.Itoa(n)
	if len(base)+len(suffix) > maxNameLen {
		base = strings.TrimRight(base[:maxNameLen-len(suffix)], "-")
	}
	return base + suffix
}

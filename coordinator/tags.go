package coordinator

import (
	"fmt"
	"slices"
	"strings"
)

// Tag limits: tags travel to every peer in each netmap, so they stay short.
const (
	maxTags   = 16
	maxTagLen = 63
)

// NormalizeTags checks operator-given tags and returns them sorted without
// duplicates. A tag is lowercase letters, digits, '-', '_', ':' and '.',
// starting with a letter or digit ("server", "tag:db", "env.prod").
func NormalizeTags(tags []string) ([]string, error) {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxTags {
		return nil, fmt.Errorf("%d tags: at most %d", len(out), maxTags)
	}
	return out, nil
}

func checkTag(t string) error {
	if t == "" || len(t) > maxTagLen {
		return fmt.Errorf("tag %q: want 1 to %d characters", t, maxTagLen)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("-_:.", rune(c))) {
			return fmt.Errorf("tag %q: use lowercase letters, digits and - _ : . (starting with a letter or digit)", t)
		}
	}
	return nil
}

// Tags are stored as one comma-separated column; a tag has no comma.
func joinTags(tags []string) string { return strings.Join(tags, ",") }

func splitTags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

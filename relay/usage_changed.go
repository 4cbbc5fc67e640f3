package relay

import (
	"maps"
	"time"
)

// Bucket is a copy of one of a ledger's history buckets: what each node
// relayed from Start for Span (a minute within the last hour, an hour
// before).
type Bucket struct {
	Start time.Time
	Span  time.Duration
	Nodes map[uint64]Counts
}

// Changed returns copies of the buckets that changed since the ledger's
// generation after (0: all of them), oldest first, and the generation
// now: pass it as after next time. It counts the live meters first. A
// minute bucket merged into an hour bucket shows as that hour bucket
// changing, whose counts then include the minute's: a copy of the history
// kept elsewhere (the coordinator's store) replaces the minutes of an
// hour with its hour bucket.
func (l *Ledger) Changed(after uint64, now time.Time) ([]Bucket, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollLocked(now)
	var out []Bucket
	for _, b := range l.buckets {
		if b.gen > after {
			out = append(out, Bucket{Start: b.start, Span: b.span, Nodes: maps.Clone(b.nodes)})
		}
	}
	return out, l.gen
}

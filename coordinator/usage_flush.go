package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/relay"
)

// usageFlushEvery is how often a coordinator copies its relay usage
// ledgers into the store (usage_store.go): what another replica's relays
// counted shows in `usage` at most this late (a peer relay's own counts
// lag by its report interval too). Each flush writes only the buckets that
// changed, mostly the current minute's.
const usageFlushEvery = 15 * time.Second

// usagePruneEvery is how often a coordinator deletes stored usage older
// than the history.
const usagePruneEvery = time.Minute

// usageFlusher copies this process's ledgers into the store.
type usageFlusher struct {
	// writer names this process's rows: a new name each run, so a
	// restarted coordinator adds to what its earlier run stored rather
	// than overwriting the buckets they share.
	writer string
	every  time.Duration

	mu sync.Mutex // one flush at a time
	// gens is the generation each ledger had at the last flush that
	// succeeded, by relay node (0: the embedded relay).
	gens map[uint64]ledgerGen
	// reported is when each peer relay had last reported as of the last
	// flush: a report that counted nothing new changes no bucket, but its
	// time must still reach the store.
	reported map[uint64]time.Time
	pruned   time.Time
}

type ledgerGen struct {
	l   *relay.Ledger
	gen uint64
}

func newUsageFlusher() (*usageFlusher, error) {
	w, err := newReplicaName()
	if err != nil {
		return nil, err
	}
	return &usageFlusher{writer: w, every: usageFlushEvery, gens: map[uint64]ledgerGen{}, reported: map[uint64]time.Time{}}, nil
}

// flushUsage writes the buckets of this process's ledgers that changed
// since the last flush that succeeded, and now and then prunes old rows.
func (s *Server) flushUsage(ctx context.Context, now time.Time) error {
	f := s.usageOut
	f.mu.Lock()
	defer f.mu.Unlock()
	ledgers, reported := s.peers.ledgers()
	if s.usage != nil {
		ledgers[0] = s.usage
	}
	var rows []usageRow
	var touched []uint64 // peer relays that reported but changed no bucket
	next := make(map[uint64]ledgerGen, len(ledgers))
	for id, l := range ledgers {
		var after uint64
		if g, ok := f.gens[id]; ok && g.l == l {
			after = g.gen
		}
		buckets, gen := l.Changed(after, now)
		next[id] = ledgerGen{l, gen}
		if len(buckets) == 0 && id != 0 && reported[id].After(f.reported[id]) {
			touched = append(touched, id)
		}
		for _, b := range buckets {
			for node, c := range b.Nodes {
				rows = append(rows, usageRow{replica: s.store.replica, relay: id, node: node,
					start: b.Start, span: b.Span, counts: c, reportedAt: reported[id]})
			}
		}
	}
	// On failure the generations stay: the next flush writes these
	// buckets again, with their counts by then.
	if err := s.store.writeUsage(ctx, f.writer, rows); err != nil {
		return err
	}
	for _, id := range touched {
		if err := s.store.touchUsage(ctx, f.writer, id, reported[id]); err != nil {
			return err
		}
	}
	f.gens, f.reported = next, reported
	if now.Sub(f.pruned) >= usagePruneEvery {
		if err := s.store.pruneUsage(ctx, now.Add(-relay.UsageHistory)); err != nil {
			return err
		}
		f.pruned = now
	}
	return nil
}

// usageLoop flushes every f.every until ctx ends, then once more, so a
// coordinator stopped cleanly leaves all it counted in the store.
func (s *Server) usageLoop(ctx context.Context) {
	t := time.NewTicker(s.usageOut.every)
	defer t.Stop()
	flush := func(parent context.Context) {
		fctx, cancel := context.WithTimeout(parent, dbTimeout)
		defer cancel()
		if err := s.flushUsage(fctx, time.Now()); err != nil && parent.Err() == nil {
			s.logLimit.Log(s.log, slog.LevelWarn, "write relay usage to the store", "err", logsafe.Clip(err.Error()))
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush(context.Background())
			return
		case <-t.C:
			flush(ctx)
		}
	}
}

package coordinator

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/relay"
)

// The relay usage table joins the shared store suite (store_suite_test.go):
// both engines must keep it alike.
func init() {
	storeBehaviours = append(storeBehaviours, struct {
		name string
		run  func(t *testing.T, e storeEngine, st *Store, reopen func(*testing.T) *Store)
	}{"RelayUsage", suiteRelayUsage})
}

// suiteRelayUsage: two writers' rows sum up per relay and node, a writer's
// own rows are left out when it asks, a rewrite replaces a bucket (a retried
// flush counts nothing twice), an hour row replaces its writer's minute rows,
// a report that counted nothing new still dates the relay, counts past
// BIGINT (a peer relay's garbage) are stored capped and summed without
// overflow, and buckets older than the history are pruned.
func suiteRelayUsage(t *testing.T, _ storeEngine, st *Store, reopen func(*testing.T) *Store) {
	ctx := context.Background()
	other := reopen(t) // another replica, or this coordinator's next run
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	c := func(n uint64) relay.Counts {
		return relay.Counts{BytesIn: n, PacketsIn: 1, BytesOut: 2 * n, PacketsOut: 2}
	}
	plus := func(cs ...relay.Counts) (sum relay.Counts) {
		for _, x := range cs {
			sum.Add(x)
		}
		return sum
	}
	minute := func(replica string, rel, node uint64, at time.Duration, n uint64) usageRow {
		return usageRow{replica: replica, relay: rel, node: node, start: t0.Add(at), span: time.Minute, counts: c(n)}
	}
	// Writer "a" (replica ra): its embedded relay relayed for node 7 in
	// two minutes; peer relay 5 reported node 7 once.
	peer := minute("ra", 5, 7, 0, 1000)
	peer.reportedAt = t0.Add(20 * time.Second)
	if err := st.writeUsage(ctx, "a", []usageRow{minute("ra", 0, 7, 0, 100), minute("ra", 0, 7, time.Minute, 10), peer}); err != nil {
		t.Fatal(err)
	}
	// Writer "b" (replica rb) on the other handle: its own embedded relay,
	// and the same peer relay's later report.
	peerB := minute("rb", 5, 7, 2*time.Minute, 1)
	peerB.reportedAt = t0.Add(150 * time.Second)
	if err := other.writeUsage(ctx, "b", []usageRow{minute("rb", 0, 7, time.Minute, 3), peerB}); err != nil {
		t.Fatal(err)
	}
	// A retried flush of a's first minute replaces it.
	if err := st.writeUsage(ctx, "a", []usageRow{minute("ra", 0, 7, 0, 100)}); err != nil {
		t.Fatal(err)
	}
	read := func(s *Store, except string, from time.Time) map[usageKey]usageSum {
		t.Helper()
		got, err := s.readUsage(ctx, except, from)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := read(other, "nobody", t0)
	want := map[usageKey]usageSum{
		{"ra", 0, 7}: {counts: plus(c(100), c(10)), from: t0},
		{"rb", 0, 7}: {counts: c(3), from: t0.Add(time.Minute)},
		{"", 5, 7}:   {counts: plus(c(1000), c(1)), from: t0, reportedAt: peerB.reportedAt},
	}
	check := func(what string, got, want map[usageKey]usageSum) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %d sums %+v, want %d %+v", what, len(got), got, len(want), want)
		}
		for k, w := range want {
			g, ok := got[k]
			if !ok || g.counts != w.counts || !g.from.Equal(w.from) || !g.reportedAt.Equal(w.reportedAt) {
				t.Errorf("%s: %+v = %+v (present %v), want %+v", what, k, g, ok, w)
			}
		}
	}
	check("every writer", got, want)
	// b asks: its own rows are in its memory, not read.
	check("all but b", read(other, "b", t0), map[usageKey]usageSum{
		{"ra", 0, 7}: {counts: plus(c(100), c(10)), from: t0},
		{"", 5, 7}:   {counts: c(1000), from: t0, reportedAt: peer.reportedAt},
	})
	// The window: buckets that end after 10:01:30 only.
	check("from 10:01:30", read(st, "nobody", t0.Add(90*time.Second)), map[usageKey]usageSum{
		{"ra", 0, 7}: {counts: c(10), from: t0.Add(time.Minute)},
		{"rb", 0, 7}: {counts: c(3), from: t0.Add(time.Minute)},
		{"", 5, 7}:   {counts: c(1), from: t0.Add(2 * time.Minute), reportedAt: peerB.reportedAt},
	})

	// a's ledger merges its minutes into the 10:00 hour: the hour row
	// replaces a's minute rows of that relay (not b's, nor a's peer rows).
	hour := usageRow{replica: "ra", relay: 0, node: 7, start: t0, span: time.Hour, counts: plus(c(100), c(10))}
	if err := st.writeUsage(ctx, "a", []usageRow{hour}); err != nil {
		t.Fatal(err)
	}
	check("after a's hour row", read(st, "nobody", t0), want)

	// Peer relay 5 reports to a again, counting nothing new: the time
	// reaches a's newest row of it.
	at := t0.Add(10 * time.Minute)
	if err := st.touchUsage(ctx, "a", 5, at); err != nil {
		t.Fatal(err)
	}
	if g := read(other, "b", t0)[usageKey{"", 5, 7}]; !g.reportedAt.Equal(at) || g.counts != c(1000) {
		t.Errorf("after a's touch: peer relay 5 %+v, want reported at %v, counts unchanged", g, at)
	}

	// Garbage: a peer relay said it passed 2^64-1 bytes, twice (two
	// writers). Stored capped, summed saturating; nothing fails.
	huge := relay.Counts{BytesIn: math.MaxUint64, PacketsIn: math.MaxUint64, BytesOut: math.MaxUint64, PacketsOut: math.MaxUint64}
	for i, s := range []*Store{st, other} {
		row := usageRow{replica: "r", relay: 6, node: 7, start: t0.Add(5 * time.Minute), span: time.Minute, counts: huge}
		if err := s.writeUsage(ctx, []string{"a", "b"}[i], []usageRow{row}); err != nil {
			t.Fatalf("huge counts: %v", err)
		}
	}
	if g := read(st, "nobody", t0)[usageKey{"", 6, 7}]; g.counts.BytesIn < math.MaxInt64 {
		t.Errorf("huge counts read back as %+v", g.counts)
	}

	// Pruning a day later drops what ended before the cut.
	if err := st.pruneUsage(ctx, t0.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM relay_usage`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// Left: a's hour row, b's 10:01 and 10:02 rows, the two huge rows.
	if rows != 5 {
		t.Errorf("%d rows after pruning what ended by 10:01:30, want 5", rows)
	}
}

package coordinator

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/relay"
)

// Relay usage in the store (usageha). Each coordinator process counts in
// memory what its embedded relay relays and what the peer relays report
// to it (relay.Ledger), and copies its ledgers' history buckets into the
// relay_usage table every usageFlushEvery (usage_flush.go), each process
// under a writer name of its own. `usage` asked on any replica reads the
// other writers' rows and adds its own ledgers' live counts: every relay
// of the mesh shows, and the asked process's own counts stay exact.
//
// A writer only ever rewrites its own rows, each with the absolute count
// of its bucket (a retried write counts nothing twice); rows older than
// the history (relay.UsageHistory) are deleted. The table holds at most
// writers × relays × nodes × buckets rows: a bucket's rows are the nodes
// that relayed in it, a peer relay's reports count member nodes only and
// at most control.MaxRelayUsageRows each, and a process keeps about 85
// buckets (60 minutes, 24 hours).

// usageRow is one row of relay_usage: what a relay counted for node in
// one history bucket.
type usageRow struct {
	replica string
	relay   uint64 // the peer relay's node; 0: the writer's embedded relay
	node    uint64
	start   time.Time
	span    time.Duration
	counts  relay.Counts
	// reportedAt is when the peer relay last reported to the writer (zero
	// for the embedded relay).
	reportedAt time.Time
}

// usageBatchRows bounds the rows of one INSERT (11 parameters each: well
// under both engines' parameter limits).
const usageBatchRows = 400

// storedCount fits a count into BIGINT: a peer relay may report anything.
func storedCount(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

// writeUsage writes rows as writer's: each replaces writer's row of its
// relay, node and bucket start. A row spanning more than a minute (an
// hour bucket the ledger merged from minute buckets) also deletes
// writer's shorter rows of its relay within its span, in the same
// transaction, so no reader counts them twice.
func (s *Store) writeUsage(ctx context.Context, writer string, rows []usageRow) error {
	if len(rows) == 0 {
		return nil
	}
	return s.db.InOwnTx(ctx, func(tx *dbTx) error {
		type span struct {
			relay uint64
			start time.Time
		}
		merged := map[span]bool{}
		for _, r := range rows {
			if r.span <= time.Minute || merged[span{r.relay, r.start}] {
				continue
			}
			merged[span{r.relay, r.start}] = true
			if _, err := tx.ExecContext(ctx, `DELETE FROM relay_usage WHERE writer = ? AND relay_node = ? AND span < ?
				AND bucket_start >= ? AND bucket_start < ?`,
				writer, int64(r.relay), r.span.Milliseconds(), toMillis(r.start), toMillis(r.start.Add(r.span))); err != nil {
				return fmt.Errorf("write relay usage: %w", err)
			}
		}
		for len(rows) > 0 {
			n := min(len(rows), usageBatchRows)
			if err := insertUsage(ctx, tx, writer, rows[:n]); err != nil {
				return err
			}
			rows = rows[n:]
		}
		return nil
	})
}

func insertUsage(ctx context.Context, tx *dbTx, writer string, rows []usageRow) error {
	var q strings.Builder
	q.WriteString(`INSERT INTO relay_usage (writer, replica, relay_node, node, bucket_start, span,
		bytes_in, packets_in, bytes_out, packets_out, reported_at) VALUES `)
	args := make([]any, 0, 11*len(rows))
	for i, r := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
		c := r.counts
		args = append(args, writer, r.replica, int64(r.relay), int64(r.node), toMillis(r.start), r.span.Milliseconds(),
			storedCount(c.BytesIn), storedCount(c.PacketsIn), storedCount(c.BytesOut), storedCount(c.PacketsOut), nullMillis(r.reportedAt))
	}
	q.WriteString(` ON CONFLICT (writer, relay_node, node, bucket_start) DO UPDATE SET replica = excluded.replica,
		span = excluded.span, bytes_in = excluded.bytes_in, packets_in = excluded.packets_in,
		bytes_out = excluded.bytes_out, packets_out = excluded.packets_out, reported_at = excluded.reported_at`)
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("write relay usage: %w", err)
	}
	return nil
}

// touchUsage records that peer relay rel last reported to writer at at, on
// writer's newest rows of it (readers take the latest report time of a
// relay's rows): a report that counted nothing new writes no bucket.
func (s *Store) touchUsage(ctx context.Context, writer string, rel uint64, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE relay_usage SET reported_at = ? WHERE writer = ? AND relay_node = ?
		AND bucket_start = (SELECT MAX(bucket_start) FROM relay_usage WHERE writer = ? AND relay_node = ?)`,
		toMillis(at), writer, int64(rel), writer, int64(rel))
	if err != nil {
		return fmt.Errorf("write relay usage: %w", err)
	}
	return nil
}

// usageKey names what stored usage sums up by: the embedded relay of a
// replica (relay 0; replica "" with SQLite) or a peer relay (replica "",
// whichever replicas it reported to), and a node.
type usageKey struct {
	replica     string
	relay, node uint64
}

// usageSum is stored usage summed over writers and buckets: from is the
// start of the oldest bucket taken, reportedAt the latest report.
type usageSum struct {
	counts     relay.Counts
	from       time.Time
	reportedAt time.Time
}

// readUsage sums the rows of every writer but except whose buckets end
// after from.
func (s *Store) readUsage(ctx context.Context, except string, from time.Time) (map[usageKey]usageSum, error) {
	// The first condition lets the index narrow the scan: no bucket spans
	// more than an hour.
	rows, err := s.db.QueryContext(ctx, `SELECT replica, relay_node, node, bucket_start,
		bytes_in, packets_in, bytes_out, packets_out, reported_at FROM relay_usage
		WHERE bucket_start > ? AND bucket_start + span > ? AND writer <> ?`,
		toMillis(from.Add(-time.Hour)), toMillis(from), except)
	if err != nil {
		return nil, fmt.Errorf("read relay usage: %w", err)
	}
	defer rows.Close()
	out := map[usageKey]usageSum{}
	for rows.Next() {
		var k usageKey
		var rel, node, start, bi, pi, bo, po int64
		var reported sql.NullInt64
		if err := rows.Scan(&k.replica, &rel, &node, &start, &bi, &pi, &bo, &po, &reported); err != nil {
			return nil, fmt.Errorf("read relay usage: %w", err)
		}
		k.relay, k.node = uint64(rel), uint64(node)
		if k.relay != 0 {
			k.replica = ""
		}
		sum := out[k]
		// Summed in Go, saturating: SQL's SUM would overflow (SQLite) on
		// the capped counts of a peer relay that reported garbage.
		sum.counts.Add(relay.Counts{BytesIn: uint64(max(bi, 0)), PacketsIn: uint64(max(pi, 0)), BytesOut: uint64(max(bo, 0)), PacketsOut: uint64(max(po, 0))})
		if t := time.UnixMilli(start).UTC(); sum.from.IsZero() || t.Before(sum.from) {
			sum.from = t
		}
		if t := fromMillis(reported); t.After(sum.reportedAt) {
			sum.reportedAt = t
		}
		out[k] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read relay usage: %w", err)
	}
	return out, nil
}

// pruneUsage deletes the rows of buckets that ended before before.
func (s *Store) pruneUsage(ctx context.Context, before time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM relay_usage WHERE bucket_start < ? AND bucket_start + span <= ?`,
		toMillis(before), toMillis(before)); err != nil {
		return fmt.Errorf("prune relay usage: %w", err)
	}
	return nil
}

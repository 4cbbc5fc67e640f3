package coordinator

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Relay usage per node. Each allocation's relay socket counts what it
// relays in its own atomics (allocMeter), so the hot path takes no lock
// and looks nothing up. The ledger reads the meters every sweep tick and
// when asked, adding what each relayed since the last read to the node's
// totals and to the current time bucket. Usage lives in memory only:
// totals since the coordinator started, and buckets for --since.
//
// In is what the relay received from the node's peers and passed to the
// node; Out is what the node sent through the relay to its peers. Bytes are
// the relayed UDP payloads (the WireGuard packets) as the relay socket sent
// or received them; the TURN framing between the agent and the relay (the
// ChannelData header) is not counted.
type usageCounts struct {
	BytesIn, PacketsIn, BytesOut, PacketsOut uint64
}

func (c *usageCounts) add(d usageCounts) {
	c.BytesIn += d.BytesIn
	c.PacketsIn += d.PacketsIn
	c.BytesOut += d.BytesOut
	c.PacketsOut += d.PacketsOut
}

func (c usageCounts) minus(d usageCounts) usageCounts {
	return usageCounts{c.BytesIn - d.BytesIn, c.PacketsIn - d.PacketsIn, c.BytesOut - d.BytesOut, c.PacketsOut - d.PacketsOut}
}

func (c usageCounts) zero() bool { return c == usageCounts{} }

// allocMeter is one allocation's counters, written by its relay socket.
type allocMeter struct {
	bytesIn, pktsIn, bytesOut, pktsOut atomic.Uint64
}

func (m *allocMeter) in(n int) {
	m.bytesIn.Add(uint64(n))
	m.pktsIn.Add(1)
}

func (m *allocMeter) out(n int) {
	m.bytesOut.Add(uint64(n))
	m.pktsOut.Add(1)
}

func (m *allocMeter) load() usageCounts {
	return usageCounts{m.bytesIn.Load(), m.pktsIn.Load(), m.bytesOut.Load(), m.pktsOut.Load()}
}

// Bucket spans: a minute for the last hour, an hour for the day before;
// older usage counts only in the totals. So the history holds at most
// about 85 buckets, each with the nodes that relayed in it.
const (
	usageFine     = time.Minute
	usageFineKeep = time.Hour
	usageCoarse   = time.Hour
	// UsageHistory is how far back --since may reach.
	UsageHistory = 24 * time.Hour
)

type usageBucket struct {
	start time.Time
	span  time.Duration
	nodes map[uint64]usageCounts
}

func (b *usageBucket) end() time.Time { return b.start.Add(b.span) }

type meterState struct {
	node uint64
	seen usageCounts // what the ledger already took from the meter
}

// usageLedger sums the meters per node.
type usageLedger struct {
	started time.Time

	mu      sync.Mutex
	live    map[*allocMeter]*meterState
	total   map[uint64]usageCounts
	buckets []*usageBucket // oldest first
	pruned  time.Time
}

func newUsageLedger(now time.Time) *usageLedger {
	return &usageLedger{started: now, live: map[*allocMeter]*meterState{}, total: map[uint64]usageCounts{}}
}

// meter registers a new allocation of node and returns its counters.
func (l *usageLedger) meter(node uint64) *allocMeter {
	m := &allocMeter{}
	l.mu.Lock()
	l.live[m] = &meterState{node: node}
	l.mu.Unlock()
	return m
}

// release takes a closed allocation's last counts and forgets its meter.
func (l *usageLedger) release(m *allocMeter, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.live[m]; st != nil {
		l.takeLocked(m, st, now)
		delete(l.live, m)
	}
}

// roll takes what every live meter counted since the last read.
func (l *usageLedger) roll(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollLocked(now)
}

func (l *usageLedger) rollLocked(now time.Time) {
	for m, st := range l.live {
		l.takeLocked(m, st, now)
	}
	l.compactLocked(now)
}

func (l *usageLedger) takeLocked(m *allocMeter, st *meterState, now time.Time) {
	cur := m.load()
	d := cur.minus(st.seen)
	st.seen = cur
	if d.zero() {
		return
	}
	t := l.total[st.node]
	t.add(d)
	l.total[st.node] = t
	b := l.bucketLocked(now)
	c := b.nodes[st.node]
	c.add(d)
	b.nodes[st.node] = c
}

// bucketLocked is the minute bucket for now (the newest one if the clock
// went back).
func (l *usageLedger) bucketLocked(now time.Time) *usageBucket {
	start := now.Truncate(usageFine)
	if n := len(l.buckets); n > 0 {
		if last := l.buckets[n-1]; !start.After(last.start) {
			return last
		}
	}
	b := &usageBucket{start: start, span: usageFine, nodes: map[uint64]usageCounts{}}
	l.buckets = append(l.buckets, b)
	return b
}

// compactLocked merges minute buckets older than usageFineKeep into hour
// buckets, and drops buckets older than UsageHistory.
func (l *usageLedger) compactLocked(now time.Time) {
	fineFrom, keepFrom := now.Add(-usageFineKeep), now.Add(-UsageHistory)
	out := l.buckets[:0]
	for _, b := range l.buckets {
		if !b.end().After(keepFrom) {
			continue
		}
		if b.span == usageFine && !b.end().After(fineFrom) {
			start := b.start.Truncate(usageCoarse)
			if n := len(out); n > 0 && out[n-1].span == usageCoarse && out[n-1].start.Equal(start) {
				for id, c := range b.nodes {
					sum := out[n-1].nodes[id]
					sum.add(c)
					out[n-1].nodes[id] = sum
				}
				continue
			}
			b.start, b.span = start, usageCoarse
		}
		out = append(out, b)
	}
	clear(l.buckets[len(out):])
	l.buckets = out
}

// prune forgets the totals of nodes that left the mesh (active says no),
// hold no allocation and relayed nothing within the history, so the ledger
// stays as large as the mesh. It runs at most once a minute.
func (l *usageLedger) prune(now time.Time, active func(uint64) bool) {
	l.mu.Lock()
	if now.Sub(l.pruned) < time.Minute {
		l.mu.Unlock()
		return
	}
	l.pruned = now
	keep := map[uint64]bool{}
	for _, st := range l.live {
		keep[st.node] = true
	}
	for _, b := range l.buckets {
		for id := range b.nodes {
			keep[id] = true
		}
	}
	var doomed []uint64
	for id := range l.total {
		if !keep[id] {
			doomed = append(doomed, id)
		}
	}
	l.mu.Unlock()
	// active takes the hub's lock: ask without holding ours.
	gone := doomed[:0]
	for _, id := range doomed {
		if !active(id) {
			gone = append(gone, id)
		}
	}
	l.mu.Lock()
	for _, id := range gone {
		delete(l.total, id)
	}
	l.mu.Unlock()
}

// usage returns the usage per node since now-since (since 0: since the
// coordinator started) and the time it counts from: the start of the
// oldest bucket it took, so a window rounds out to whole buckets.
func (l *usageLedger) usage(since time.Duration, now time.Time) (map[uint64]usageCounts, time.Time, error) {
	if since < 0 || since > UsageHistory {
		return nil, time.Time{}, fmt.Errorf("usage: --since %s: want at most %s (the history kept; omit --since for the totals since the coordinator started)", since, UsageHistory)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollLocked(now)
	out := map[uint64]usageCounts{}
	if since == 0 {
		for id, c := range l.total {
			out[id] = c
		}
		return out, l.started, nil
	}
	cutoff := now.Add(-since)
	from := cutoff.Truncate(usageFine)
	for _, b := range l.buckets {
		if !b.end().After(cutoff) {
			continue
		}
		if b.start.Before(from) {
			from = b.start
		}
		for id, c := range b.nodes {
			sum := out[id]
			sum.add(c)
			out[id] = sum
		}
	}
	if from.Before(l.started) {
		from = l.started
	}
	return out, from, nil
}

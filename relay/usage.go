package relay

import (
	"fmt"
	"math"
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
type Counts struct {
	BytesIn    uint64 `json:"bytes_in"`
	PacketsIn  uint64 `json:"packets_in"`
	BytesOut   uint64 `json:"bytes_out"`
	PacketsOut uint64 `json:"packets_out"`
}

// Add adds d to c.
func (c *Counts) Add(d Counts) { c.add(d) }

// add saturates rather than wrap: a peer relay's reports are a member's
// word, and a huge count must not wrap around to a small one.
func (c *Counts) add(d Counts) {
	c.BytesIn = satAdd(c.BytesIn, d.BytesIn)
	c.PacketsIn = satAdd(c.PacketsIn, d.PacketsIn)
	c.BytesOut = satAdd(c.BytesOut, d.BytesOut)
	c.PacketsOut = satAdd(c.PacketsOut, d.PacketsOut)
}

func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}

func (c Counts) minus(d Counts) Counts {
	return Counts{c.BytesIn - d.BytesIn, c.PacketsIn - d.PacketsIn, c.BytesOut - d.BytesOut, c.PacketsOut - d.PacketsOut}
}

func (c Counts) zero() bool { return c == Counts{} }

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

func (m *allocMeter) load() Counts {
	return Counts{m.bytesIn.Load(), m.pktsIn.Load(), m.bytesOut.Load(), m.pktsOut.Load()}
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
	nodes map[uint64]Counts
	// gen is the ledger's gen when the bucket last changed (Changed).
	gen uint64
}

func (b *usageBucket) end() time.Time { return b.start.Add(b.span) }

type meterState struct {
	node uint64
	seen Counts // what the ledger already took from the meter
}

// Ledger sums the meters per node.
type Ledger struct {
	started time.Time

	mu      sync.Mutex
	live    map[*allocMeter]*meterState
	total   map[uint64]Counts
	buckets []*usageBucket // oldest first
	pruned  time.Time
	// pending is what was counted since the last TakePending (a peer
	// relay reports it to the coordinator); nil until someone asks.
	pending map[uint64]Counts
	// gen counts the changes to the buckets, so Changed can tell which
	// changed since a caller last looked.
	gen uint64
}

func NewLedger(now time.Time) *Ledger {
	return &Ledger{started: now, live: map[*allocMeter]*meterState{}, total: map[uint64]Counts{}}
}

// meter registers a new allocation of node and returns its counters.
func (l *Ledger) meter(node uint64) *allocMeter {
	m := &allocMeter{}
	l.mu.Lock()
	l.live[m] = &meterState{node: node}
	l.mu.Unlock()
	return m
}

// release takes a closed allocation's last counts and forgets its meter.
func (l *Ledger) release(m *allocMeter, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.live[m]; st != nil {
		l.takeLocked(m, st, now)
		delete(l.live, m)
	}
}

// roll takes what every live meter counted since the last read.
func (l *Ledger) roll(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollLocked(now)
}

func (l *Ledger) rollLocked(now time.Time) {
	for m, st := range l.live {
		l.takeLocked(m, st, now)
	}
	l.compactLocked(now)
}

func (l *Ledger) takeLocked(m *allocMeter, st *meterState, now time.Time) {
	cur := m.load()
	d := cur.minus(st.seen)
	st.seen = cur
	if d.zero() {
		return
	}
	l.addLocked(st.node, d, now)
}

func (l *Ledger) addLocked(node uint64, d Counts, now time.Time) {
	t := l.total[node]
	t.add(d)
	l.total[node] = t
	b := l.bucketLocked(now)
	c := b.nodes[node]
	c.add(d)
	b.nodes[node] = c
	l.gen++
	b.gen = l.gen
	if l.pending != nil {
		p := l.pending[node]
		p.add(d)
		l.pending[node] = p
	}
}

// Add counts d for node at now: usage a peer relay reported.
func (l *Ledger) Add(node uint64, d Counts, now time.Time) {
	if d.zero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addLocked(node, d, now)
	l.compactLocked(now)
}

// TakePending returns what the ledger counted per node since the last
// call (the first call starts the count and returns nothing).
func (l *Ledger) TakePending(now time.Time) map[uint64]Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[uint64]Counts{}
		return nil
	}
	l.rollLocked(now)
	out := l.pending
	l.pending = map[uint64]Counts{}
	return out
}

// bucketLocked is the minute bucket for now (the newest one if the clock
// went back).
func (l *Ledger) bucketLocked(now time.Time) *usageBucket {
	start := now.Truncate(usageFine)
	if n := len(l.buckets); n > 0 {
		if last := l.buckets[n-1]; !start.After(last.start) {
			return last
		}
	}
	b := &usageBucket{start: start, span: usageFine, nodes: map[uint64]Counts{}}
	l.buckets = append(l.buckets, b)
	return b
}

// compactLocked merges minute buckets older than usageFineKeep into hour
// buckets, and drops buckets older than UsageHistory.
func (l *Ledger) compactLocked(now time.Time) {
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
				l.gen++
				out[n-1].gen = l.gen
				continue
			}
			b.start, b.span = start, usageCoarse
			l.gen++
			b.gen = l.gen
		}
		out = append(out, b)
	}
	clear(l.buckets[len(out):])
	l.buckets = out
}

// prune forgets the totals of nodes that left the mesh (active says no),
// hold no allocation and relayed nothing within the history, so the ledger
// stays as large as the mesh. It runs at most once a minute.
func (l *Ledger) prune(now time.Time, active func(uint64) bool) {
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
func (l *Ledger) Usage(since time.Duration, now time.Time) (map[uint64]Counts, time.Time, error) {
	if since < 0 || since > UsageHistory {
		return nil, time.Time{}, fmt.Errorf("usage: --since %s: want at most %s (the history kept; omit --since for the totals since the coordinator started)", since, UsageHistory)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollLocked(now)
	out := map[uint64]Counts{}
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

package relay

import (
	"sync"
	"testing"
	"time"
)

// TestUsageLedgerSince checks the --since windows: minute buckets for the
// last hour, hour buckets before, nothing older than a day (but the totals),
// and a window rounds out to whole buckets.
func TestUsageLedgerSince(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	l := NewLedger(t0)
	m7, m8 := l.meter(7), l.meter(8)
	// 10 bytes out for node 7 every minute for 30 hours, node 8 100 bytes
	// in at the first minute only.
	m8.in(100)
	for i := range 30 * 60 {
		now := t0.Add(time.Duration(i)*time.Minute + 30*time.Second)
		m7.out(10)
		l.roll(now)
	}
	end := t0.Add(30*time.Hour - 30*time.Second) // 15:59:30 on day 2
	l.roll(end)
	check := func(since time.Duration, wantOut7, wantIn8 uint64, wantFrom time.Time) {
		t.Helper()
		got, from, err := l.Usage(since, end)
		if err != nil {
			t.Fatal(err)
		}
		if got[7].BytesOut != wantOut7 || got[8].BytesIn != wantIn8 || !from.Equal(wantFrom) {
			t.Errorf("since %s: node 7 out %d, node 8 in %d, from %s; want %d, %d, %s",
				since, got[7].BytesOut, got[8].BytesIn, from, wantOut7, wantIn8, wantFrom)
		}
	}
	check(0, 30*60*10, 100, t0)
	// 1 min back from 15:59:30 is 15:58:30: the 15:58 bucket counts too.
	check(time.Minute, 20, 0, end.Add(-time.Minute).Truncate(time.Minute))
	// 10 min back from 15:59:30 is 15:49:30: the 15:49 bucket counts too.
	check(10*time.Minute, 110, 0, end.Add(-10*time.Minute).Truncate(time.Minute))
	// 3 h back (12:59:30) reaches into the hour buckets: 12:00 whole to
	// 14:58, then minute buckets from 14:59 (younger than an hour).
	check(3*time.Hour, 4*60*10, 0, t0.Add(26*time.Hour))
	// 24 h back: the 15:00 hour of day 1 and later; node 8's first minute
	// (10:00 on day 1) is gone from the history but not from the totals.
	check(24*time.Hour, 25*60*10, 0, t0.Add(5*time.Hour))
	if _, _, err := l.Usage(25*time.Hour, end); err == nil {
		t.Error("--since 25h accepted beyond the 24h history")
	}
	if n := len(l.buckets); n > 24+60+2 {
		t.Errorf("%d buckets kept, want at most %d", n, 24+60+2)
	}
	// Node 8 left the mesh: with no allocation and nothing in the history,
	// its totals go; node 7's (still relaying) stay.
	l.release(m8, end)
	l.prune(end, func(id uint64) bool { return false })
	if got, _, _ := l.Usage(0, end); got[8] != (Counts{}) || got[7].BytesOut == 0 {
		t.Errorf("after prune: %+v", got)
	}
}

// TestUsageLedgerConcurrent counts from several goroutines per allocation
// while the ledger rolls and allocations close: nothing is lost or counted
// twice (run with -race).
func TestUsageLedgerConcurrent(t *testing.T) {
	l := NewLedger(time.Now())
	const workers, perWorker = 4, 5000
	var wg sync.WaitGroup
	for w := range workers {
		m := l.meter(uint64(w%2 + 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				m.out(3)
				m.in(2)
			}
			l.release(m, time.Now())
		}()
	}
	stop := make(chan struct{})
	rolled := make(chan struct{})
	go func() {
		defer close(rolled)
		for {
			select {
			case <-stop:
				return
			default:
				l.roll(time.Now())
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-rolled
	got, _, _ := l.Usage(0, time.Now())
	for _, id := range []uint64{1, 2} {
		want := Counts{BytesIn: 2 * 2 * perWorker, PacketsIn: 2 * perWorker, BytesOut: 2 * 3 * perWorker, PacketsOut: 2 * perWorker}
		if got[id] != want {
			t.Errorf("node %d: %+v, want %+v", id, got[id], want)
		}
	}
	if len(l.live) != 0 {
		t.Errorf("%d meters still live after release", len(l.live))
	}
}

// TestUsageLedgerChanged: Changed returns only the buckets that changed
// since the generation it last returned, and an hour bucket once minute
// buckets merge into it.
func TestUsageLedgerChanged(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	l := NewLedger(t0)
	m := l.meter(7)
	m.out(10)
	got, gen := l.Changed(0, t0.Add(10*time.Second))
	if len(got) != 1 || got[0].Span != time.Minute || got[0].Nodes[7].BytesOut != 10 {
		t.Fatalf("first look: %+v", got)
	}
	if again, g := l.Changed(gen, t0.Add(20*time.Second)); len(again) != 0 || g != gen {
		t.Errorf("nothing relayed, yet changed: %+v (gen %d, was %d)", again, g, gen)
	}
	m.out(5)
	got, gen = l.Changed(gen, t0.Add(70*time.Second))
	if len(got) != 1 || !got[0].Start.Equal(t0.Add(time.Minute)) || got[0].Nodes[7].BytesOut != 5 {
		t.Fatalf("second minute: %+v", got)
	}
	// An hour and more later both minutes are in the 10:00 hour bucket.
	m.out(1)
	got, _ = l.Changed(gen, t0.Add(2*time.Hour))
	var hour *Bucket
	for i := range got {
		if got[i].Span == time.Hour && got[i].Start.Equal(t0) {
			hour = &got[i]
		}
	}
	if hour == nil || hour.Nodes[7].BytesOut != 15 {
		t.Fatalf("after compaction: %+v, want the 10:00 hour bucket with 15 bytes", got)
	}
}

package hub

import (
	"testing"
	"time"
)

func TestSignalBudget(t *testing.T) {
	b := NewSignalBudget()
	now := time.Now()
	n := 0
	for range 1000 {
		if b.Allow(7, now) {
			n++
		}
	}
	if n != int(signalRatePair.Burst) {
		t.Fatalf("%d signals to one receiver allowed at once, want %v", n, signalRatePair.Burst)
	}
	if !b.Allow(8, now) {
		t.Fatal("another receiver shares the first one's budget")
	}
	if !b.Allow(7, now.Add(time.Second)) {
		t.Fatal("the pair's budget did not refill")
	}
	// Spread over many receivers, the sender-wide budget holds.
	n = 0
	for i := range 10000 {
		if b.Allow(uint64(100+i), now.Add(time.Second)) {
			n++
		}
	}
	if n > int(signalRateSender.Burst) {
		t.Fatalf("%d signals allowed to many receivers, more than the sender's burst %v", n, signalRateSender.Burst)
	}
	if len(b.pairs) > maxSignalPairs {
		t.Fatalf("%d pair buckets held", len(b.pairs))
	}
}

package hub

import (
	"time"

	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// Signal budgets of one sender. A session costs a peer pair a dozen signals
// or so (an offer, an answer and a few candidates per lane), so honest
// agents stay far below these even when a new agent meets a thousand peers
// at once; a member flooding another gets its excess dropped here, before
// it costs the hub's lock or the receiver's queue.
var (
	// signalRateSender bounds all of one sender's signals.
	signalRateSender = ratelimit.Rate{Burst: 4000, PerSec: 1000}
	// signalRatePair bounds one sender's signals to one receiver.
	signalRatePair = ratelimit.Rate{Burst: 100, PerSec: 20}
)

// maxSignalPairs bounds a sender's per-receiver buckets; receivers are
// named by the sender, so it could make up any number.
const maxSignalPairs = 4096

// SignalBudget is one stream's signal allowance. Only the stream's reader
// uses it, so it needs no lock.
type SignalBudget struct {
	all   ratelimit.Bucket
	pairs map[uint64]*ratelimit.Bucket
}

func NewSignalBudget() *SignalBudget {
	return &SignalBudget{pairs: map[uint64]*ratelimit.Bucket{}}
}

// allow charges one signal to the receiver to and tells whether it may go.
func (b *SignalBudget) Allow(to uint64, now time.Time) bool {
	p := b.pairs[to]
	if p == nil {
		if len(b.pairs) >= maxSignalPairs {
			for id, q := range b.pairs {
				if signalRatePair.Full(q, now) {
					delete(b.pairs, id)
				}
			}
			if len(b.pairs) >= maxSignalPairs {
				clear(b.pairs) // the sender-wide bucket still holds
			}
		}
		p = &ratelimit.Bucket{}
		b.pairs[to] = p
	}
	if ok, _ := signalRateSender.Take(&b.all, now); !ok {
		return false
	}
	if ok, _ := signalRatePair.Take(p, now); !ok {
		signalRateSender.Refund(&b.all)
		return false
	}
	return true
}

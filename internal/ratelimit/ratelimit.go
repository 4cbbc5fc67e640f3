// Package ratelimit has the token buckets the coordinator and the agent use
// to bound what a peer on the network can make them do.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Rate is a token bucket's shape: Burst tokens at most, refilled at PerSec.
// A Burst of 0 or less means no limit.
type Rate struct {
	Burst  float64
	PerSec float64
}

// Unlimited tells whether r limits nothing.
func (r Rate) Unlimited() bool { return r.Burst <= 0 }

// Bucket is one token bucket. Its zero value is full. It is not safe for
// concurrent use: its owner locks (or owns it from one goroutine).
type Bucket struct {
	used   bool
	tokens float64
	at     time.Time
}

func (r Rate) refill(b *Bucket, now time.Time) {
	if !b.used {
		b.used, b.tokens, b.at = true, r.Burst, now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(r.Burst, b.tokens+d.Seconds()*r.PerSec)
	}
	b.at = now
}

// Take takes one token if there is one. When there is none it returns false
// and how long until there will be.
func (r Rate) Take(b *Bucket, now time.Time) (bool, time.Duration) {
	if r.Unlimited() {
		return true, 0
	}
	r.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if r.PerSec <= 0 {
		return false, time.Hour
	}
	return false, time.Duration((1 - b.tokens) / r.PerSec * float64(time.Second))
}

// Refund gives back a token taken for something that turned out free.
func (r Rate) Refund(b *Bucket) {
	if b.used {
		b.tokens = math.Min(r.Burst, b.tokens+1)
	}
}

// Full tells whether b has refilled completely by now (it then means
// nothing and may be forgotten).
func (r Rate) Full(b *Bucket, now time.Time) bool {
	r.refill(b, now)
	return b.tokens >= r.Burst
}

// Keyed is a set of buckets of one rate, one per key (a source address, an
// auth key's hash), safe for concurrent use. Its memory is bounded: past
// MaxKeys it forgets full buckets, then arbitrary ones (forgetting a bucket
// only forgives its key early).
type Keyed struct {
	Rate    Rate
	MaxKeys int

	mu      sync.Mutex
	buckets map[string]*Bucket
}

// NewKeyed returns a keyed limiter of rate r holding at most maxKeys buckets.
func NewKeyed(r Rate, maxKeys int) *Keyed {
	return &Keyed{Rate: r, MaxKeys: maxKeys, buckets: map[string]*Bucket{}}
}

// Reserve takes a token of key's bucket before the work it pays for, so
// that concurrent attempts cannot all pass one check; Refund returns it if
// the attempt turned out not to count.
func (k *Keyed) Reserve(key string, now time.Time) (ok bool, wait time.Duration) {
	if k == nil || k.Rate.Unlimited() {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	if b == nil {
		if len(k.buckets) >= k.MaxKeys {
			k.pruneLocked(now)
		}
		b = &Bucket{}
		k.buckets[key] = b
	}
	return k.Rate.Take(b, now)
}

// Refund returns a token reserved for key.
func (k *Keyed) Refund(key string) {
	if k == nil || k.Rate.Unlimited() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if b := k.buckets[key]; b != nil {
		k.Rate.Refund(b)
	}
}

// Tokens is what key's bucket holds now (Burst for a key never seen).
func (k *Keyed) Tokens(key string, now time.Time) float64 {
	if k == nil || k.Rate.Unlimited() {
		return math.Inf(1)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	if b == nil {
		return k.Rate.Burst
	}
	k.Rate.refill(b, now)
	return b.tokens
}

// Len is the number of buckets held.
func (k *Keyed) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}

func (k *Keyed) pruneLocked(now time.Time) {
	for key, b := range k.buckets {
		if k.Rate.Full(b, now) {
			delete(k.buckets, key)
		}
	}
	for key := range k.buckets {
		if len(k.buckets) < k.MaxKeys*9/10 {
			break
		}
		delete(k.buckets, key)
	}
}

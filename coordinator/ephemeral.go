package coordinator

import (
	"sync"
	"time"
)

// Default ephemeral timings: a node of an ephemeral key is removed once its
// stream has been gone for EphemeralTimeout; a node that registered but has
// not connected yet (or since a coordinator restart) gets EphemeralGrace.
const (
	defaultEphemeralTimeout = 5 * time.Minute
	defaultEphemeralGrace   = 10 * time.Minute
)

// ephemeralTracker holds the removal deadline of every ephemeral node that
// is offline. It is fed by registrations and stream connects/disconnects,
// so the sweep costs O(offline ephemeral nodes), not a scan of the mesh.
type ephemeralTracker struct {
	timeout, grace time.Duration

	mu        sync.Mutex
	ephemeral map[uint64]bool      // every ephemeral member
	online    map[uint64]bool      // those with a stream
	deadline  map[uint64]time.Time // those without: when they go
}

func newEphemeralTracker(timeout, grace time.Duration) *ephemeralTracker {
	return &ephemeralTracker{
		timeout: timeout, grace: grace,
		ephemeral: map[uint64]bool{}, online: map[uint64]bool{}, deadline: map[uint64]time.Time{},
	}
}

// registered records a (re-)admitted node. A re-admission by a key that is
// not ephemeral makes the node permanent.
func (t *ephemeralTracker) registered(id uint64, ephemeral bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ephemeral {
		delete(t.ephemeral, id)
		delete(t.deadline, id)
		return
	}
	t.ephemeral[id] = true
	if !t.online[id] {
		t.deadline[id] = now.Add(t.grace)
	}
}

func (t *ephemeralTracker) connected(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.online[id] = true
	delete(t.deadline, id)
}

func (t *ephemeralTracker) disconnected(id uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.online, id)
	if t.ephemeral[id] {
		t.deadline[id] = now.Add(t.timeout)
	}
}

func (t *ephemeralTracker) forget(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.ephemeral, id)
	delete(t.online, id)
	delete(t.deadline, id)
}

// due returns the nodes whose deadline has passed.
func (t *ephemeralTracker) due(now time.Time) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []uint64
	for id, d := range t.deadline {
		if !now.Before(d) {
			out = append(out, id)
		}
	}
	return out
}

// sweepInterval is how often deadlines are checked: often enough that a
// short timeout (as in tests) is honoured within a fraction of itself.
func (t *ephemeralTracker) sweepInterval() time.Duration {
	return min(time.Second, max(t.timeout/5, 50*time.Millisecond))
}

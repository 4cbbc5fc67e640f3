package agent

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// sessionPace is the agent's budget of ICE sessions started (an ICE agent
// made, on either side of a lane): a burst, then a steady rate. Without
// it a coordinator restart, or hundreds of peers coming online in one
// netmap delta, made an eager agent build an ICE agent (sockets, STUN
// transactions, a TURN allocation on the relay lane) for every peer and
// lane in the same instant. Sessions over budget wait for the lane's next
// tick; the peer's timers retry what we ignore.
var sessionPace = ratelimit.Rate{Burst: 40, PerSec: 20}

// pacer guards the agent's session bucket; its lock is a leaf (taken
// under a peer's lock).
type pacer struct {
	mu     sync.Mutex
	bucket ratelimit.Bucket
	// deferred counts session starts the budget put off.
	deferred atomic.Uint64
}

// take charges one session start. When the budget is spent it returns
// false and when to try again (with jitter, so the deferred lanes do not
// all come back in one tick).
func (p *pacer) take(now time.Time) (bool, time.Time) {
	p.mu.Lock()
	ok, wait := sessionPace.Take(&p.bucket, now)
	p.mu.Unlock()
	if ok {
		return true, time.Time{}
	}
	p.deferred.Add(1)
	return false, now.Add(wait + rand.N(time.Second))
}

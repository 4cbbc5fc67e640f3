package coordinator

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// sourceLimiter is a token bucket per source address for answers a
// stranger can ask for without credentials (STUN Binding responses, TURN
// challenges). Such an answer is larger than the request, so with a spoofed
// source it is a reflection: the limit bounds what one victim can be sent.
// IPv6 sources are keyed by their /64, which one host usually holds whole.
// Memory is bounded by maxSources buckets.
type sourceLimiter struct {
	burst float64
	rate  float64 // tokens per second

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	max     int
}

// Defaults for unauthenticated STUN/TURN answers. An agent sends one or two
// Binding requests (plus retransmissions) per ICE gathering, that is per
// peer, and netcheck a few dozen: 40 agents behind one NAT address meeting
// their 39 peers at once send about 3,000, which 1,000 at once and 200/s
// answer within 10 s. A victim of reflection gets at most 200 answers of
// about 64 bytes a second (100 kbit/s) from us, whoever asks.
const (
	stunAnswerBurst  = 1000
	stunAnswerPerSec = 200
	maxSources       = 65536
)

func newSourceLimiter(burst int, perSecond float64) *sourceLimiter {
	return &sourceLimiter{burst: float64(burst), rate: perSecond, buckets: map[netip.Addr]*bucket{}, max: maxSources}
}

// sourceKey is what a source is limited by: its IPv4 address, or its
// IPv6 /64 (IPv4-mapped addresses count as IPv4).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allowAddr takes a token for the source of a datagram; addresses that are
// not UDP/IP are refused.
func (l *sourceLimiter) allowAddr(from net.Addr, now time.Time) bool {
	u, ok := from.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false
	}
	return l.allow(a, now)
}

// allow takes a token from a's bucket, and says whether there was one.
func (l *sourceLimiter) allow(a netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	k := sourceKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[k] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked forgets buckets that have refilled (they mean nothing), then
// arbitrary ones down to 90% of the bound: forgetting a bucket only gives
// its source a fresh burst.
func (l *sourceLimiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max*9/10 {
			break
		}
		delete(l.buckets, k)
	}
}

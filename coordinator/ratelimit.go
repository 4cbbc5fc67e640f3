package coordinator

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// authLimiter slows down auth key and credential guessing: each source IP
// has a token bucket that only failed attempts drain. While it is empty,
// every attempt from that IP (good or bad) is refused with 429 before the
// store is touched. Successful joins cost nothing, so many honest agents
// behind one NAT address (or a load generator on loopback) are not slowed.
type authLimiter struct {
	burst float64
	rate  float64 // tokens per second

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds the limiter's memory under a spray of source addresses.
const maxBuckets = 100_000

func newAuthLimiter(burst int, perMinute float64) *authLimiter {
	return &authLimiter{burst: float64(burst), rate: perMinute / 60, buckets: map[string]*bucket{}}
}

// refillLocked brings b up to now.
func (l *authLimiter) refillLocked(b *bucket, now time.Time) {
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
}

// allow says whether ip may try now, and if not, how long until it may.
func (l *authLimiter) allow(ip string, now time.Time) (bool, time.Duration) {
	if l == nil || l.burst <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		return true, 0
	}
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	if l.rate <= 0 {
		return false, time.Hour
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// fail records a failed attempt from ip and reports whether it emptied the
// bucket, so the caller logs the start of a refusal period once.
func (l *authLimiter) fail(ip string, now time.Time) bool {
	if l == nil || l.burst <= 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[ip] = b
	}
	l.refillLocked(b, now)
	b.tokens = math.Max(0, b.tokens-1)
	return b.tokens < 1
}

// pruneLocked forgets full buckets (they mean nothing), and if that is not
// enough, arbitrary ones: forgetting a bucket only forgives its IP early.
func (l *authLimiter) pruneLocked(now time.Time) {
	for ip, b := range l.buckets {
		l.refillLocked(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, ip)
		}
	}
	for ip := range l.buckets {
		if len(l.buckets) < maxBuckets*9/10 {
			break
		}
		delete(l.buckets, ip)
	}
}

// sourceIP is the address the limiter keys on: the TCP peer. Behind a
// reverse proxy that is the proxy; we do not trust forwarding headers.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkAuthRate answers 429 with Retry-After and returns false when r's
// source is over its failure budget.
func (s *Server) checkAuthRate(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.limiter.allow(sourceIP(r), time.Now())
	if ok {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	s.log.Debug("auth attempt refused: too many failures", "remote", r.RemoteAddr, "path", r.URL.Path, "retry_after_s", secs)
	writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts from this address; retry later")
	return false
}

// authFailed charges r's source for a failed attempt.
func (s *Server) authFailed(r *http.Request) {
	if s.limiter.fail(sourceIP(r), time.Now()) {
		s.log.Warn("too many failed authentication attempts; refusing this address for a while",
			"remote", sourceIP(r), "burst", s.limiter.burst, "per_minute", s.limiter.rate*60)
	}
}

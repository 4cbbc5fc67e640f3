package coordinator

import (
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// authLimiter slows down auth key and credential guessing: each source (an
// IPv4 address or an IPv6 /64) has a token bucket that only failed attempts
// drain. While it is empty, every attempt from that source (good or bad) is
// refused with 429 before the store is touched. Successful joins cost
// nothing, so many honest agents behind one NAT address are not slowed.
//
// An attempt reserves its token before the check and gets it back when it
// succeeds: charging only after the store answered let 300 concurrent bad
// attempts all pass the check, 70 of them reaching the store against a
// burst of 20.
type authLimiter struct {
	keyed *ratelimit.Keyed
}

// maxBuckets bounds the limiter's memory under a spray of source addresses.
const maxBuckets = 100_000

func newAuthLimiter(burst int, perMinute float64) *authLimiter {
	return &authLimiter{keyed: ratelimit.NewKeyed(ratelimit.Rate{Burst: float64(burst), PerSec: perMinute / 60}, maxBuckets)}
}

// sourceIP is the address the limits key on: the TCP peer's IPv4 address or
// IPv6 /64. Behind a reverse proxy that is the proxy; we do not trust
// forwarding headers.
func sourceIP(r *http.Request) string { return ratelimit.SourceKey(r.RemoteAddr) }

// authAttempt is one attempt holding a reserved token of its source.
type authAttempt struct {
	s    *Server
	key  string
	once sync.Once
}

// beginAuth reserves a token for r's source. When there is none it answers
// 429 with Retry-After and returns false. Otherwise the caller must end the
// attempt with failed or ok (deferring ok is fine: after failed it does
// nothing).
func (s *Server) beginAuth(w http.ResponseWriter, r *http.Request) (*authAttempt, bool) {
	key := sourceIP(r)
	ok, wait := s.limiter.keyed.Reserve(key, time.Now())
	if ok {
		return &authAttempt{s: s, key: key}, true
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	s.log.Debug("auth attempt refused: too many failures", "remote", r.RemoteAddr, "path", r.URL.Path, "retry_after_s", secs)
	writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts from this address; retry later")
	return nil, false
}

// failed keeps the attempt's token: a failed attempt is charged.
func (a *authAttempt) failed() {
	a.once.Do(func() {
		l := a.s.limiter.keyed
		if l.Tokens(a.key, time.Now()) >= 1 {
			return
		}
		a.s.logLimit.Log(a.s.log, slog.LevelWarn, "too many failed authentication attempts; refusing this address for a while",
			"source", a.key, "burst", l.Rate.Burst, "per_minute", l.Rate.PerSec*60)
	})
}

// ok gives the token back: the attempt did not fail authentication.
func (a *authAttempt) ok() {
	a.once.Do(func() { a.s.limiter.keyed.Refund(a.key) })
}

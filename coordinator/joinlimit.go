package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// Defaults of the join limit: registrations by one auth key.
const (
	defaultJoinBurst     = 100
	defaultJoinPerMinute = 600
)

// maxJoinKeys bounds the join limiter's memory; keys it forgets are only
// forgiven early.
const maxJoinKeys = 10_000

// errMeshFull refuses a new node once the mesh has its cap of nodes.
var errMeshFull = errors.New("mesh is full: node limit reached")

func newJoinLimiter(burst int, perMinute float64) *ratelimit.Keyed {
	return ratelimit.NewKeyed(ratelimit.Rate{Burst: float64(burst), PerSec: perMinute / 60}, maxJoinKeys)
}

// joinKey is the join limiter's key for an auth key: its hash, so the
// limiter holds no secret.
func joinKey(authKey string) string {
	h := sha256.Sum256([]byte(authKey))
	return hex.EncodeToString(h[:16])
}

// reserveJoin charges a join to req's auth key before the store is asked,
// so concurrent joins cannot all pass one check. Without a token it answers
// 429 and returns false. The returned key ("" when req has no auth key) is
// for refundJoin.
func (s *Server) reserveJoin(w http.ResponseWriter, req control.RegisterRequest) (string, bool) {
	if req.AuthKey == "" {
		return "", true
	}
	key := joinKey(req.AuthKey)
	ok, wait := s.joins.Reserve(key, time.Now())
	if ok {
		return key, true
	}
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	s.metrics.registrations.With("rate_limited").Inc()
	s.logLimit.Log(s.log, slog.LevelWarn, "register refused: too many joins with one auth key", "retry_after_s", secs)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, "too many nodes joining with this auth key; retry later")
	return "", false
}

// refundJoin gives the token back when no node was admitted by the key
// (refused, or admitted by its credential).
func (s *Server) refundJoin(key string) {
	if key != "" {
		s.joins.Refund(key)
	}
}

// nodeCap is the most nodes this store admits.
func (s *Store) nodeCap() int {
	if s.maxNodes > 0 && s.maxNodes < control.MaxNodes {
		return s.maxNodes
	}
	return control.MaxNodes
}

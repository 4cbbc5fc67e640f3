package coordinator

import (
	"strings"
	"sync"
	"time"
)

// lineLimiter lets a log line through at most burst times at once and
// then once per every, counting what it held back: a stranger who can
// trigger the line (a refused TURN credential) cannot grow the log at will.
// It is global, not per source: sources are cheap to change.
type lineLimiter struct {
	burst float64
	every time.Duration

	mu         sync.Mutex
	tokens     float64
	at         time.Time
	suppressed int
}

func newLineLimiter(burst int, every time.Duration) *lineLimiter {
	return &lineLimiter{burst: float64(burst), every: every, tokens: float64(burst)}
}

// allow says whether to log now, and how many lines were held back since
// the last one logged.
func (l *lineLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.at.IsZero() {
		l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.at))/float64(l.every))
	}
	l.at = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// truncate shortens s to at most n bytes and replaces anything but
// printable ASCII, for logging what a stranger sent.
func truncate(s string, n int) string {
	cut := len(s) > n
	if cut {
		s = s[:n]
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	if cut {
		b.WriteString("...")
	}
	return b.String()
}

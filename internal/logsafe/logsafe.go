// Package logsafe keeps what the network sends from growing our logs: Clip
// bounds a string taken from a request or a peer before it is logged, and
// Limiter thins out lines that an outsider can make us repeat.
package logsafe

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// MaxLen is how many bytes of a network-supplied string are logged.
const MaxLen = 128

// Clip returns s cut to MaxLen bytes, with control and non-ASCII bytes
// escaped (so a value cannot forge log lines), and how much was cut.
func Clip(s string) string { return ClipN(s, MaxLen) }

// ClipN is Clip to n bytes, for values that are short when honest.
func ClipN(s string, n int) string {
	cut := 0
	if len(s) > n {
		cut = len(s) - n
		s = s[:n]
	}
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if cut > 0 {
		q += "...(" + strconv.Itoa(cut) + " more bytes)"
	}
	return q
}

// Limiter lets through at most Burst lines per message per Interval and
// counts the rest; the next line that passes carries "suppressed" with that
// count. Keys are the messages (constant strings of our code), with
// LogFor the message and a party's ID; the map is bounded.
type Limiter struct {
	Burst    int
	Interval time.Duration

	mu    sync.Mutex
	lines map[string]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// NewLimiter returns a limiter of burst lines per interval per message.
func NewLimiter(burst int, interval time.Duration) *Limiter {
	return &Limiter{Burst: burst, Interval: interval, lines: map[string]*window{}}
}

// maxKeys bounds the limiter's memory; past it, finished windows are
// forgotten.
const maxKeys = 10_000

// Log logs msg at level unless msg was logged Burst times this interval.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	l.LogFor("", log, level, msg, args...)
}

// LogFor is Log with a budget per msg and who (a node ID, say), for lines
// one party can repeat, so that it cannot crowd out the others' lines.
func (l *Limiter) LogFor(who string, log *slog.Logger, level slog.Level, msg string, args ...any) {
	ok, suppressed := l.allow(msg+"\x00"+who, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, msg, args...)
}

func (l *Limiter) allow(msg string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.lines[msg]
	if w == nil {
		if len(l.lines) >= maxKeys {
			for k, x := range l.lines {
				if now.Sub(x.start) >= l.Interval {
					delete(l.lines, k)
				}
			}
		}
		w = &window{start: now}
		l.lines[msg] = w
	}
	if now.Sub(w.start) >= l.Interval {
		w.start, w.n = now, 0
	}
	if w.n >= l.Burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	s := w.suppressed
	w.suppressed = 0
	return true, s
}

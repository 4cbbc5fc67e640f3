// Package lograte wraps a slog.Handler so that a line repeated many times
// (the same level and message, whatever its attributes) is written a few
// times and then summarised: "similar lines suppressed" with a count. A
// flood - a peer that keeps failing, a stranger that keeps knocking - then
// costs a bounded number of lines, and memory is bounded too.
package lograte

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Options tune the limiter; the zero value gives the defaults.
type Options struct {
	// Min is the lowest level limited (default info): debug output is
	// only written when asked for, and then in full.
	Min slog.Level
	// Burst is how many lines of one kind pass per window (default 10).
	Burst int
	// Window is the first window (default 1 min). A kind still suppressed
	// when its window ends gets a window twice as long, up to MaxWindow, so
	// a line that never stops costs a few lines an hour, not per minute.
	Window time.Duration
	// MaxWindow caps the backoff (default 1 h).
	MaxWindow time.Duration
	// MaxKeys bounds the kinds tracked (default 1024). Lines of kinds
	// beyond it share one overflow kind.
	MaxKeys int
}

// keyLen caps the part of a message used as its key, so memory stays
// bounded even when a message embeds something a sender chose.
const keyLen = 200

// overflowMsg is the message of the kind shared by lines that find the
// table full.
const overflowMsg = "too many distinct log lines"

type ctxKey struct{}

// WithKey returns ctx carrying the kind of the lines logged with it, in
// place of their message. A logger that formats changing text (addresses,
// errors) into its messages passes its format string, so that its lines
// still count as one kind, and a sender cannot make each line a new kind.
func WithKey(ctx context.Context, kind string) context.Context {
	return context.WithValue(ctx, ctxKey{}, kind)
}

func ctxValue(ctx context.Context) (string, bool) {
	if ctx == nil {
		return "", false
	}
	k, ok := ctx.Value(ctxKey{}).(string)
	return k, ok
}

// Handler is the rate-limiting slog.Handler. Handlers derived with
// WithAttrs and WithGroup share its limits.
type Handler struct {
	next slog.Handler
	s    *state
}

type key struct {
	level slog.Level
	msg   string
}

type entry struct {
	end        time.Time     // when the current window ends
	window     time.Duration // its length
	passed     int           // lines written in this window
	suppressed int           // lines dropped in this window
}

type state struct {
	opt  Options
	root slog.Handler // summaries go here: without another line's attributes
	now  func() time.Time

	mu      sync.Mutex
	entries map[key]*entry
	swept   time.Time // last sweep of a full table
	timer   bool      // a flush is scheduled
	after   func(time.Duration, func())
}

// New returns a Handler that passes what its limits allow to next.
func New(next slog.Handler, opt Options) *Handler {
	if opt.Burst <= 0 {
		opt.Burst = 10
	}
	if opt.Window <= 0 {
		opt.Window = time.Minute
	}
	if opt.MaxWindow < opt.Window {
		opt.MaxWindow = max(time.Hour, opt.Window)
	}
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = 1024
	}
	return &Handler{next: next, s: &state{
		opt:     opt,
		root:    next,
		now:     time.Now,
		entries: map[key]*entry{},
		after:   func(d time.Duration, f func()) { time.AfterFunc(d, f) },
	}}
}

// Enabled reports whether next handles level at all.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// WithAttrs returns a Handler with attrs that shares h's limits.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), s: h.s}
}

// WithGroup returns a Handler in group name that shares h's limits.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), s: h.s}
}

// Handle writes r unless its kind has used up its window, and first writes
// the summary of that kind's last window if one is due.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.s.opt.Min {
		return h.next.Handle(ctx, r)
	}
	msg := r.Message
	if k, ok := ctxValue(ctx); ok {
		msg = k
	}
	pass, due := h.s.admit(r.Level, msg)
	for _, sr := range due {
		h.s.root.Handle(ctx, sr)
	}
	if !pass {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// admit counts a line and says whether it passes, with the summaries due
// for its kind.
func (s *state) admit(level slog.Level, msg string) (bool, []slog.Record) {
	if len(msg) > keyLen {
		// A copy: a substring would keep the whole message alive.
		msg = strings.Clone(msg[:keyLen])
	}
	k := key{level, msg}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		// At most one sweep a second: under a flood of distinct lines a
		// sweep per line would cost a scan of the table each.
		if len(s.entries) >= s.opt.MaxKeys && now.Sub(s.swept) >= time.Second {
			s.sweep(now)
		}
		if len(s.entries) >= s.opt.MaxKeys {
			k = key{level, overflowMsg}
			e = s.entries[k]
		}
		if e == nil {
			e = &entry{end: now.Add(s.opt.Window), window: s.opt.Window}
			s.entries[k] = e
		}
	}
	var due []slog.Record
	if !now.Before(e.end) {
		if r, ok := s.roll(k, e, now); ok {
			due = append(due, r)
		}
	}
	if e.passed < s.opt.Burst {
		e.passed++
		return true, due
	}
	e.suppressed++
	if !s.timer {
		s.timer = true
		s.after(s.opt.Window, s.flush)
	}
	return false, due
}

// roll ends e's window at now (it has ended): it returns the summary of
// what the window suppressed, if anything, and opens the next window,
// twice as long after a suppression, back to the first length otherwise.
func (s *state) roll(k key, e *entry, now time.Time) (slog.Record, bool) {
	var r slog.Record
	ok := e.suppressed > 0
	if ok {
		r = slog.NewRecord(now, k.level, "similar lines suppressed", 0)
		r.AddAttrs(slog.String("message", k.msg), slog.Int("count", e.suppressed), slog.Duration("over", e.window))
		e.window = min(2*e.window, s.opt.MaxWindow)
	} else {
		e.window = s.opt.Window
	}
	e.end, e.passed, e.suppressed = now.Add(e.window), 0, 0
	return r, ok
}

// sweep forgets kinds whose window ended with nothing left to report.
func (s *state) sweep(now time.Time) {
	s.swept = now
	for k, e := range s.entries {
		if !now.Before(e.end) && e.suppressed == 0 {
			delete(s.entries, k)
		}
	}
}

// flush writes the summaries of windows that have ended, so a flood that
// stops is still reported, and schedules itself again while any kind is
// suppressed.
func (s *state) flush() {
	now := s.now()
	var due []slog.Record
	s.mu.Lock()
	pending := false
	for k, e := range s.entries {
		if e.suppressed == 0 {
			continue
		}
		if now.Before(e.end) {
			pending = true
			continue
		}
		if r, ok := s.roll(k, e, now); ok {
			due = append(due, r)
		}
	}
	s.sweep(now)
	s.timer = pending
	if pending {
		s.after(s.opt.Window, s.flush)
	}
	s.mu.Unlock()
	for _, r := range due {
		s.root.Handle(context.Background(), r)
	}
}

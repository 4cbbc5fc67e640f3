package lograte

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// rig is a Handler on a fake clock writing text lines (without times) to
// a buffer, with the flush timer under the test's control.
type rig struct {
	h       *Handler
	log     *slog.Logger
	buf     *bytes.Buffer
	clock   time.Time
	pending []func() // scheduled flushes
}

func newRig(t *testing.T, opt Options) *rig {
	t.Helper()
	r := &rig{buf: &bytes.Buffer{}, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	text := slog.NewTextHandler(r.buf, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
	r.h = New(text, opt)
	r.h.s.now = func() time.Time { return r.clock }
	r.h.s.after = func(_ time.Duration, f func()) { r.pending = append(r.pending, f) }
	r.log = slog.New(r.h)
	return r
}

func (r *rig) advance(d time.Duration) { r.clock = r.clock.Add(d) }

// fire runs the scheduled flushes, as their timers would.
func (r *rig) fire() {
	p := r.pending
	r.pending = nil
	for _, f := range p {
		f()
	}
}

// take returns the lines written since the last take.
func (r *rig) take() []string {
	s := strings.TrimSpace(r.buf.String())
	r.buf.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestBurstThenSummary(t *testing.T) {
	r := newRig(t, Options{Burst: 3, Window: time.Minute})
	for i := range 10 {
		r.log.Warn("relay unavailable", "try", i)
	}
	lines := r.take()
	if len(lines) != 3 {
		t.Fatalf("10 lines in a window with burst 3: %d written:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[2], "try=2") {
		t.Errorf("the first 3 should pass, third is %q", lines[2])
	}
	// The next line after the window first reports what was dropped.
	r.advance(time.Minute)
	r.log.Warn("relay unavailable", "try", 10)
	lines = r.take()
	want := `level=WARN msg="similar lines suppressed" message="relay unavailable" count=7 over=1m0s`
	if len(lines) != 2 || lines[0] != want || !strings.Contains(lines[1], "try=10") {
		t.Fatalf("after the window: got\n%s\nwant the summary %q then the line", strings.Join(lines, "\n"), want)
	}
}

func TestKindsAreLevelAndMessage(t *testing.T) {
	r := newRig(t, Options{Burst: 1})
	r.log.Info("a", "peer", "x")
	r.log.Info("a", "peer", "y") // same kind: other attributes do not matter
	r.log.Warn("a")              // other level
	r.log.Info("b")              // other message
	r.log.With("peer", "z").Info("a")
	lines := r.take()
	if len(lines) != 3 || !strings.Contains(lines[0], "peer=x") || !strings.Contains(lines[1], "WARN") || !strings.Contains(lines[2], "msg=b") {
		t.Fatalf("got\n%s", strings.Join(lines, "\n"))
	}
}

// Lines formatted from one format string are one kind when the logger
// says so, however their text differs.
func TestKeyFromContext(t *testing.T) {
	r := newRig(t, Options{Burst: 2})
	const format = "Failed to read from candidate %s"
	ctx := WithKey(t.Context(), format)
	for i := range 10 {
		r.log.WarnContext(ctx, fmt.Sprintf(format, fmt.Sprintf("203.0.113.%d:4000", i)))
	}
	if n := len(r.take()); n != 2 {
		t.Fatalf("%d of 10 lines of one format passed, want 2", n)
	}
	r.advance(time.Minute)
	r.fire()
	want := `level=WARN msg="similar lines suppressed" message="Failed to read from candidate %s" count=8 over=1m0s`
	if got := r.take(); len(got) != 1 || got[0] != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

func TestTimerReportsAFloodThatStopped(t *testing.T) {
	r := newRig(t, Options{Burst: 2, Window: time.Minute})
	child := r.log.With("peer", "p1").WithGroup("g")
	for range 5 {
		child.Error("set WireGuard endpoint", "err", "boom")
	}
	if n := len(r.take()); n != 2 {
		t.Fatalf("%d lines passed, want 2", n)
	}
	if len(r.pending) != 1 {
		t.Fatalf("%d flushes scheduled, want 1", len(r.pending))
	}
	r.fire() // too early: the window has not ended
	if got := r.take(); got != nil || len(r.pending) != 1 {
		t.Fatalf("flush before the window ended wrote %q and scheduled %d", got, len(r.pending))
	}
	r.advance(time.Minute)
	r.fire()
	lines := r.take()
	// Summaries carry no attributes of the lines they stand for.
	want := `level=ERROR msg="similar lines suppressed" message="set WireGuard endpoint" count=3 over=1m0s`
	if len(lines) != 1 || lines[0] != want {
		t.Fatalf("flush wrote\n%s\nwant %q", strings.Join(lines, "\n"), want)
	}
	if len(r.pending) != 0 {
		t.Errorf("nothing left to report, yet %d flushes scheduled", len(r.pending))
	}
}

// A line that never stops costs fewer lines each hour, and a kind that
// went quiet starts again with the first window.
func TestBackoff(t *testing.T) {
	r := newRig(t, Options{Burst: 5, Window: time.Minute, MaxWindow: time.Hour})
	perHour := func() int {
		n := 0
		for range 3600 {
			r.log.Warn("no port mapping offered")
			r.advance(time.Second)
			if len(r.pending) > 0 {
				r.fire()
			}
			n += len(r.take())
		}
		return n
	}
	first, third := 0, 0
	first = perHour()
	perHour()
	third = perHour()
	t.Logf("a line every second: %d lines the first hour, %d the third", first, third)
	if first > 50 || third > 12 {
		t.Errorf("a line every second: %d lines the first hour, %d the third; want <= 50 and <= 12", first, third)
	}
	// Quiet for two hours: the kind is forgotten or back to the first
	// window, and a new burst passes at once.
	r.advance(2 * time.Hour)
	r.fire()
	r.take()
	for range 5 {
		r.log.Warn("no port mapping offered")
	}
	if n := len(r.take()); n != 5 {
		t.Errorf("after a quiet spell %d of 5 lines passed", n)
	}
}

// Distinct messages without end (a sender choosing them) cost bounded
// memory and bounded lines.
func TestManyKindsBounded(t *testing.T) {
	r := newRig(t, Options{Burst: 2, MaxKeys: 50})
	for i := range 10000 {
		r.log.Warn(fmt.Sprintf("bad packet %d %s", i, strings.Repeat("x", 1000)))
	}
	lines := r.take()
	if len(lines) > 50*2+2 {
		t.Errorf("%d lines written for 10000 distinct messages with 50 kinds of burst 2", len(lines))
	}
	if n := len(r.h.s.entries); n > 51 {
		t.Errorf("%d kinds tracked, want at most 51", n)
	}
	for k := range r.h.s.entries {
		if len(k.msg) > keyLen {
			t.Fatalf("key of %d bytes kept", len(k.msg))
		}
	}
	// The overflow kind reports what it dropped.
	r.advance(time.Minute)
	r.fire()
	if out := strings.Join(r.take(), "\n"); !strings.Contains(out, `message="too many distinct log lines"`) {
		t.Errorf("no overflow summary:\n%s", out)
	}
	// Once the windows end, the table makes room for new kinds again.
	r.advance(2 * time.Second)
	r.log.Warn("fresh")
	if out := strings.Join(r.take(), "\n"); !strings.Contains(out, "msg=fresh") {
		t.Errorf("a new kind after the flood did not pass: %q", out)
	}
}

func TestDebugUnlimited(t *testing.T) {
	r := newRig(t, Options{Burst: 1})
	r.h.next = slog.NewTextHandler(r.buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	for range 20 {
		r.log.Debug("ping sent")
	}
	if n := len(r.take()); n != 20 {
		t.Errorf("%d of 20 debug lines written, want all", n)
	}
}

func TestEnabledFollowsNext(t *testing.T) {
	h := New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}), Options{})
	if h.Enabled(t.Context(), slog.LevelDebug) || !h.Enabled(t.Context(), slog.LevelInfo) {
		t.Error("Enabled does not follow the wrapped handler")
	}
}

func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	buf := &bytes.Buffer{}
	h := New(slog.NewTextHandler(lockedWriter{&mu, buf}, nil), Options{Burst: 10})
	log := slog.New(h)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				log.With("g", g).Info("busy", "i", i)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(buf.String(), "\n"); n != 10 {
		t.Errorf("8000 lines of one kind at once: %d written, want 10", n)
	}
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

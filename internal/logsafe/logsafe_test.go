package logsafe

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestClip(t *testing.T) {
	if got := Clip("offer"); got != "offer" {
		t.Fatalf("Clip(offer) = %q", got)
	}
	long := strings.Repeat("x", 60<<10)
	got := Clip(long)
	if len(got) > MaxLen+32 || !strings.HasSuffix(got, "more bytes)") {
		t.Fatalf("Clip of 60 KB = %q", got)
	}
	if got := Clip("a\nlevel=ERROR msg=forged"); strings.Contains(got, "\n") {
		t.Fatalf("newline kept: %q", got)
	}
}

func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := NewLimiter(3, time.Hour)
	for range 100 {
		l.Log(log, slog.LevelInfo, "noisy")
	}
	if n := strings.Count(buf.String(), "noisy"); n != 3 {
		t.Fatalf("%d lines logged, want 3", n)
	}
	// A new interval lets a line through with the count of the others.
	l.lines["noisy\x00"].start = time.Now().Add(-2 * time.Hour)
	l.Log(log, slog.LevelInfo, "noisy")
	if !strings.Contains(buf.String(), "suppressed=97") {
		t.Fatalf("no suppressed count in %q", buf.String())
	}
}

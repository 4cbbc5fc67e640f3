package pionslog

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/internal/lograte"
)

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level // the slog handler's level
		want  []string   // the lines written, in order
	}{
		{slog.LevelInfo, []string{`level=WARN msg="Failed to handle: boom" pion=ice`}},
		{slog.LevelDebug, []string{
			`level=DEBUG msg="Failed to write packet: io: read/write on closed pipe" pion=ice`,
			`level=DEBUG msg="Setting new connection state: Checking" pion=ice`,
			`level=DEBUG msg="Failed to ping without candidate pairs. Connection is not possible yet." pion=ice`,
			`level=WARN msg="Failed to handle: boom" pion=ice`,
		}},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
			Level: tc.level,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		}))
		l := New(log, slog.LevelWarn).NewLogger("ice")
		// An error about a pipe we closed is routine.
		l.Errorf("Failed to write packet: %v", io.ErrClosedPipe)
		l.Tracef("packet %d", 1)
		l.Debug("ping sent")
		l.Infof("Setting new connection state: %s", "Checking")
		l.Warn("Failed to ping without candidate pairs. Connection is not possible yet.")
		l.Errorf("Failed to handle: %v", "boom")
		got := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("at %v got\n%s\nwant\n%s", tc.level, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
}

// A message pion formats from what a sender chose is cut.
func TestLongMessageCut(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), slog.LevelError).NewLogger("turn")
	l.Errorf("bad attribute %s", strings.Repeat("A", 100000))
	if n := buf.Len(); n > maxMsg+200 {
		t.Errorf("line of %d bytes for a 100 kB message", n)
	}
}

// pion's errors of one format are one kind for the rate limit, though each
// names another address.
func TestFormatIsTheKind(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(lograte.New(slog.NewTextHandler(&buf, nil), lograte.Options{Burst: 3}))
	l := New(log, slog.LevelWarn).NewLogger("ice")
	for i := range 50 {
		l.Errorf("Failed to create new remote prflx candidate (%s)", fmt.Sprintf("bad address 198.51.100.%d", i))
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Errorf("%d of 50 errors of one format written, want 3:\n%s", n, buf.String())
	}
}

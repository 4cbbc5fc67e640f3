// Package pionslog routes pion's logs (ICE, TURN, the UDP mux) to log/slog.
//
// pion warns about routine events of hole punching - "Failed to ping
// without candidate pairs", "read/write on closed pipe" when a session it
// gave up on closes - thousands of times while a mesh forms. Those are
// debug details for us; what matters is reported by our own code (path up,
// path lost, relay unavailable). So every pion level below error maps to
// debug, and error maps to a level the caller picks.
package pionslog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/pion/logging"

	"github.com/meshvpn/meshvpn/internal/lograte"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// maxMsg caps a message: pion formats addresses and errors from the
// network into its messages, and a sender must not choose a line's size.
const maxMsg = 512

// Levels for pion's debug and trace output, below slog's debug.
const (
	levelPionDebug = slog.LevelDebug - 4
	levelPionTrace = slog.LevelDebug - 8
)

// Factory is a pion logging.LoggerFactory writing to a slog.Logger.
type Factory struct {
	log      *slog.Logger
	errLevel slog.Level
}

// New returns a Factory writing to log, with pion's errors at errLevel and
// everything else at debug.
func New(log *slog.Logger, errLevel slog.Level) *Factory {
	return &Factory{log: log, errLevel: errLevel}
}

// NewLogger returns the logger for one pion scope ("ice", "turnc", ...),
// which becomes the "pion" attribute of its lines.
func (f *Factory) NewLogger(scope string) logging.LeveledLogger {
	return &logger{log: f.log.With("pion", scope), errLevel: f.errLevel}
}

type logger struct {
	log      *slog.Logger
	errLevel slog.Level
}

func (l *logger) emit(level slog.Level, msg string) {
	if l.log.Enabled(context.Background(), level) {
		l.write(context.Background(), level, msg)
	}
}

// closedErrs are the errors of a socket or pipe we closed ourselves: pion
// reports them as errors when a session it was still using goes away.
var closedErrs = []string{io.ErrClosedPipe.Error(), net.ErrClosed.Error()}

func (l *logger) write(ctx context.Context, level slog.Level, msg string) {
	if level > slog.LevelDebug && slices.ContainsFunc(closedErrs, func(e string) bool { return strings.Contains(msg, e) }) {
		level = slog.LevelDebug
		if !l.log.Enabled(context.Background(), level) {
			return
		}
	}
	l.log.Log(ctx, level, logsafe.ClipN(msg, maxMsg))
}

// emitf formats only when the line will be written: pion's debug output is
// large and mostly discarded. The format is the line's kind for the rate
// limit: the text names addresses and errors that differ line by line.
func (l *logger) emitf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.write(lograte.WithKey(context.Background(), format), level, fmt.Sprintf(format, args...))
	}
}

func (l *logger) Trace(msg string)                  { l.emit(levelPionTrace, msg) }
func (l *logger) Tracef(format string, args ...any) { l.emitf(levelPionTrace, format, args...) }
func (l *logger) Debug(msg string)                  { l.emit(levelPionDebug, msg) }
func (l *logger) Debugf(format string, args ...any) { l.emitf(levelPionDebug, format, args...) }
func (l *logger) Info(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l *logger) Infof(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l *logger) Warn(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l *logger) Warnf(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l *logger) Error(msg string)                  { l.emit(l.errLevel, msg) }
func (l *logger) Errorf(format string, args ...any) { l.emitf(l.errLevel, format, args...) }

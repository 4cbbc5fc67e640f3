package coordinator

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// defaultMaxConnsPerSource is Config.MaxConnsPerSource's default.
const defaultMaxConnsPerSource = 256

// bodyTimeout bounds the time a client has to send a request's body once
// its headers are in (ReadHeaderTimeout covers those): a body trickled a
// byte at a time held a connection and a goroutine for as long as the
// client liked.
const bodyTimeout = 15 * time.Second

// bodyDeadline sets a read deadline for the request's body before h runs.
// Every API handler but the stream's has one; the stream is long-lived and
// has its own liveness checks (pings). The server sets its own deadlines
// again before the next request on the connection.
func (s *Server) bodyDeadline(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Not every ResponseWriter supports deadlines (test recorders do
		// not); the server's do.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.bodyTimeout))
		h(w, r)
	}
}

// connLimitListener closes connections beyond max open at once from one
// source (an IPv4 address, an IPv6 /64), so one client cannot hold
// thousands of sockets and goroutines.
type connLimitListener struct {
	net.Listener
	max      int
	log      *slog.Logger
	logLimit *logsafe.Limiter
	refused  func()

	mu   sync.Mutex
	open map[string]int
}

func newConnLimitListener(ln net.Listener, max int, log *slog.Logger, logLimit *logsafe.Limiter, refused func()) net.Listener {
	if max <= 0 {
		return ln
	}
	return &connLimitListener{Listener: ln, max: max, log: log, logLimit: logLimit, refused: refused, open: map[string]int{}}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ratelimit.SourceKey(c.RemoteAddr().String())
		l.mu.Lock()
		full := l.open[key] >= l.max
		if !full {
			l.open[key]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			l.refused()
			l.logLimit.Log(l.log, slog.LevelWarn, "too many connections from one source; closing new ones", "source", key, "max", l.max)
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *connLimitListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] <= 1 {
		delete(l.open, key)
	} else {
		l.open[key]--
	}
}

// limitedConn gives its slot back when closed (once, however often Close
// is called: by the HTTP server, a TLS layer, or a hijacking WebSocket).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

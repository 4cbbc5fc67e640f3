package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

const (
	// streamReadLimit bounds one agent frame; signals are a few hundred
	// bytes, and those over control.MaxSignalFrame are dropped. A larger
	// frame is no honest agent's: it ends the sender's stream (1009).
	streamReadLimit = 16 << 10
	// pingInterval is how often a stream is probed; a NAT or a dead peer is
	// noticed within pingInterval+pingTimeout.
	pingInterval = 15 * time.Second
	pingTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	// pingReadRate is the slowest read (bytes a second) an agent is
	// allowed: a ping waits behind what was written before it, so its
	// timeout grows by that many bytes at this rate (a 2 MB netmap: 32 s).
	pingReadRate = 64 << 10
	// maxPingWait bounds that wait, so a dead agent is still noticed.
	maxPingWait = time.Minute
)

// handleStream serves GET /api/v1/stream: the long-lived WebSocket that
// carries the netmap and its deltas to an agent and signals both ways.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	version, err := negotiateVersion(r.URL.Query().Get("v"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Authenticate before the upgrade, so a bad credential gets a plain 401
	// the agent can act on.
	att, ok := s.beginAuth(w, r)
	if !ok {
		return
	}
	// The token is given back before the stream runs, not when it ends.
	defer att.ok()
	cred, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		s.logLimit.Log(s.log, slog.LevelInfo, "stream refused", "status", http.StatusUnauthorized, "reason", "missing bearer credential", "remote", r.RemoteAddr)
		att.failed()
		writeError(w, http.StatusUnauthorized, "missing bearer credential")
		return
	}
	node, err := s.store.AuthenticateNode(r.Context(), cred)
	if err == nil && !s.hub.Active(node.ID) && s.replicas != nil {
		// Registered through another replica a moment ago (or by one that
		// died before it told us): the store has the last word.
		err = s.hub.Reload(r.Context(), []uint64{node.ID})
	}
	if err == nil && !s.hub.Active(node.ID) {
		err = ErrNodeRemoved // removed while we read the store
	}
	// An agent says which public key it holds; a credential presented with
	// another node's key is refused, as at registration.
	if pk := r.Header.Get(control.HeaderPublicKey); err == nil && pk != "" && pk != node.PublicKey {
		err = ErrCredentialKeyMismatch
	}
	if isCredentialRefusal(err) {
		// The node's ID is in the credential; it is logged only when the
		// credential was once valid (removed, expired, key mismatch).
		attrs := []any{"status", http.StatusUnauthorized, "reason", err.Error(), "remote", r.RemoteAddr}
		if !errors.Is(err, ErrBadCredential) {
			if id, e := credentialNodeID(cred); e == nil {
				attrs = append(attrs, "node", id)
			}
		}
		s.logLimit.Log(s.log, slog.LevelInfo, "stream refused", attrs...)
		att.failed()
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	if err != nil {
		s.log.Error("stream: authenticate", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}

	att.ok()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		// Accept has already answered the client.
		s.log.Debug("stream: upgrade failed", "node", node.ID, "err", err)
		return
	}
	s.streams.Add(1)
	defer s.streams.Done()
	ws.SetReadLimit(streamReadLimit)
	node.SeenFrom = remoteIP(r.RemoteAddr)
	s.serveStream(ws, node, version, r.URL.Query().Get(control.QuerySince), control.Netmap{STUN: s.stunServers(r), STUNServers: s.stunServerList(r),
		DNS: &control.DNSConfig{Domain: s.cfg.DNSDomain}}, s.stunHost(r))
}

// serveStream runs one agent's stream until either side ends it.
// servers carries the netmap's server fields for this stream (STUN, ...);
// host is where the agent reaches us, for its relay URLs.
// since is the netmap version the agent holds, if it said (see
// hub/netmapversion.go).
func (s *Server) serveStream(ws *websocket.Conn, node control.Node, version int, since string, servers control.Netmap, host string) {
	log := s.log.With("node", node.ID, "name", node.Name)
	servers.STUN6 = s.stunServers6() // the same for every stream
	// ctx stops the writer and pinger. Reads use a context that is never
	// cancelled: cancelling a read makes the library drop the connection
	// without a close handshake, and we want the agent to see our reason.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var closeOnce sync.Once
	closed := make(chan struct{})
	c := hub.NewStream(node.ID, node.SeenFrom, hub.QueueLen,
		func(reason string, graceful bool) {
			closeOnce.Do(func() {
				// The hub calls this under its lock, so never wait here:
				// Close waits for the agent's close frame, and even CloseNow
				// waits for the reader and writer to let go.
				go func() {
					defer close(closed)
					if graceful {
						// Stop the writer and pinger only after the close
						// frame is out: cancelling a write or ping in flight
						// drops the connection without it.
						ws.Close(closeCode(reason), reason)
						cancel()
					} else {
						cancel()
						ws.CloseNow()
					}
				}()
			})
		})

	// The store is read (with replicas) for an agent holding another
	// replica's version.
	actx, acancel := context.WithTimeout(ctx, dbTimeout)
	err := s.hub.Attach(actx, c, version, logsafe.Clip(since), servers)
	acancel()
	if err != nil {
		log.Warn("stream refused", "err", err)
		ws.Close(websocket.StatusTryAgainLater, err.Error())
		return
	}
	who := strconv.FormatUint(node.ID, 10)
	// A member reconnecting in a loop must not fill the log: each node's
	// online/offline lines are thinned on their own.
	s.logLimit.LogFor(who, log, slog.LevelInfo, "node online")
	s.life.ephemeral.connected(node.ID)
	defer func() {
		if s.hub.Detach(c) {
			s.logLimit.LogFor(who, log, slog.LevelInfo, "node offline")
			s.life.ephemeral.disconnected(node.ID, time.Now())
		}
	}()

	var wg sync.WaitGroup
	wg.Go(func() { s.writeLoop(ctx, ws, c, host, log, &wg) })
	s.readLoop(ws, node.ID, log)

	c.Close("stream ended", false)
	<-closed
	wg.Wait()
}

// writeLoop sends the netmap, then queued frames in order, and starts a
// ping every ping interval (at most one in flight), counted in wg.
func (s *Server) writeLoop(ctx context.Context, ws *websocket.Conn, c *hub.Stream, host string, log *slog.Logger, wg *sync.WaitGroup) {
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	var pinging atomic.Bool
	// sent counts the bytes written; acked those written before the last
	// answered ping, which the agent has read (see pingWait).
	var sent, acked atomic.Int64
	if f := c.Netmap(); f != nil {
		n, err := writeNetmap(ctx, ws, f)
		if err != nil {
			log.Debug("stream write failed", "err", err)
			c.Close("write failed", false)
			return
		}
		sent.Add(n)
		// The first ping is an interval after the netmap is out, not
		// after the stream began.
		t.Reset(s.pingInterval)
	}
	// Relay credentials: right after the netmap, then renewed from here
	// (no goroutine per stream for it).
	var relaysDue relayDue
	writeRelays := func() bool {
		frame := s.relayUpdate(c.Node(), host, &relaysDue, time.Now())
		if frame == nil {
			return true
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := ws.Write(wctx, websocket.MessageText, frame)
		cancel()
		if err != nil {
			log.Debug("stream write failed", "err", err)
			c.Close("write failed", false)
			return false
		}
		sent.Add(int64(len(frame)))
		return true
	}
	if !writeRelays() {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !writeRelays() {
				return
			}
			if pinging.CompareAndSwap(false, true) {
				mark := sent.Load()
				wait := s.pingWait(mark - acked.Load())
				wg.Go(func() {
					defer pinging.Store(false)
					if s.pingOnce(ctx, ws, c, log, wait) {
						acked.Store(mark)
					}
				})
			}
		case frame := <-c.Queue():
			s.hub.Written()
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err := ws.Write(wctx, websocket.MessageText, frame)
			cancel()
			if err != nil {
				log.Debug("stream write failed", "err", err)
				c.Close("write failed", false)
				return
			}
			sent.Add(int64(len(frame)))
		}
	}
}

// writeNetmap sends a netmap as one message from its parts and returns
// its size.
func writeNetmap(ctx context.Context, ws *websocket.Conn, f *hub.NetmapFrame) (int64, error) {
	// A netmap of 10,000 nodes is 1.7 MB: allow for a slow reader.
	wctx, cancel := context.WithTimeout(ctx, 3*writeTimeout)
	defer cancel()
	w, err := ws.Writer(wctx, websocket.MessageText)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range f.Parts() {
		if _, err := w.Write(p); err != nil {
			w.Close()
			return n, err
		}
		n += int64(len(p))
	}
	return n, w.Close()
}

// pingWait is how long a ping may wait for its answer when backlog bytes
// were written since the last answered one. A write returns once the
// kernel has the bytes, so a netmap of megabytes may still be on its way
// to a slow agent, and the ping's answer comes only after the agent read
// it: pingTimeout plus backlog at pingReadRate, at most maxPingWait.
func (s *Server) pingWait(backlog int64) time.Duration {
	extra := time.Duration(float64(backlog) / float64(s.pingReadRate) * float64(time.Second))
	return max(s.pingTimeout, min(s.pingTimeout+extra, maxPingWait))
}

// pingOnce probes the stream: one that does not answer is closed, which
// marks its node offline. The writer starts one per ping interval in a
// short-lived goroutine, rather than each stream keeping a pinger goroutine
// (and its stack) alive: at 10,000 streams that was 80 MB.
// It reports whether the agent answered within wait (see pingWait).
func (s *Server) pingOnce(ctx context.Context, ws *websocket.Conn, c *hub.Stream, log *slog.Logger, wait time.Duration) bool {
	pctx, cancel := context.WithTimeout(ctx, wait)
	err := ws.Ping(pctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			log.Info("stream not answering pings, closing", "err", err)
		}
		c.Close("ping timeout", false)
		return false
	}
	s.hub.Touch(c.Node())
	return true
}

// readLoop handles frames from the agent until the stream fails or closes.
// Only signals are expected; each is checked (size, fields) and charged to
// the sender's budget before the hub sees it. Whatever is refused is
// counted and dropped: the sender's stream stays up, and so does the
// receiver's.
func (s *Server) readLoop(ws *websocket.Conn, from uint64, log *slog.Logger) {
	budget := hub.NewSignalBudget()
	for {
		typ, data, err := ws.Read(context.Background())
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusGoingAway:
				log.Debug("stream read ended", "err", err)
			default:
				// Dropped connections, oversized frames (answered with
				// 1009) and protocol errors end here.
				log.Info("stream read ended", "err", logsafe.Clip(err.Error()))
			}
			return
		}
		if typ != websocket.MessageText {
			log.Debug("ignoring binary frame")
			continue
		}
		sig, err := hub.DecodeSignal(data)
		if errors.Is(err, hub.ErrNotSignal) {
			log.Debug("ignoring frame that is not a signal", "len", len(data))
			continue
		}
		if err != nil {
			s.metrics.hub.Signals.With(hub.DropLabel(err)).Inc()
			s.logLimit.Log(log, slog.LevelInfo, "dropping frame", "err", err.Error(), "len", len(data))
			continue
		}
		if !budget.Allow(sig.To, time.Now()) {
			s.metrics.hub.Signals.With("rate_limited").Inc()
			s.logLimit.Log(log, slog.LevelInfo, "dropping signals over the sender's rate", "to", sig.To)
			continue
		}
		s.hub.Signal(from, *sig)
	}
}

// negotiateVersion picks the stream protocol version: the agent's, capped at
// ours. An agent that sends none speaks version 1.
func negotiateVersion(v string) (int, error) {
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errors.New("bad protocol version " + strconv.Quote(v))
	}
	return min(n, control.ProtocolVersion), nil
}

// bearerToken extracts the credential of an "Authorization: Bearer" header.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// closeCode is the WebSocket close code for a reason the hub gives: the
// lifecycle reasons have their own codes, so the agent need not parse text.
func closeCode(reason string) websocket.StatusCode {
	switch reason {
	case control.ReasonNodeRemoved:
		return control.CloseNodeRemoved
	case control.ReasonNodeExpired:
		return control.CloseNodeExpired
	}
	return websocket.StatusGoingAway
}

// remoteIP is the address part of an HTTP request's RemoteAddr, "" if it
// has none (a unix socket in tests).
func remoteIP(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().String()
}

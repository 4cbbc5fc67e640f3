package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/admin"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/coordinator/stunserver"
	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/ratelimit"
	"github.com/meshvpn/meshvpn/internal/statedir"
	"github.com/meshvpn/meshvpn/relay"
)

// Config configures a Server.
type Config struct {
	// Listen is the HTTP(S) API address, e.g. ":8080".
	Listen string
	// StateDir holds the local files (lock, admin socket) and, unless Store
	// is set, the SQLite store.
	StateDir string
	// Store is a PostgreSQL URL or DSN; empty keeps the store in StateDir.
	Store string
	// TLSCert and TLSKey are PEM files; with both set the API speaks HTTPS.
	TLSCert string
	TLSKey  string
	// STUNListen is the UDP address of the embedded STUN server; empty
	// disables it. Several comma-separated addresses bind one socket each:
	// the first is the primary (STUNAltListen pairs with it), the others
	// answer plain Binding requests (e.g. an IPv6 address).
	STUNListen string
	// STUNAltListen is a second UDP address of the STUN server (another IP,
	// another port, or both) for RFC 5780 NAT tests; empty disables it.
	// (netcheck)
	STUNAltListen string
	// PublicHost is the host agents are told to reach STUN at. Empty means
	// the host each agent used to reach the API.
	PublicHost string
	// PublicIPv6 is an IPv6 address of this server that agents and
	// netcheck are told to reach STUN at too (control.Netmap.STUN6), empty
	// for none. The STUN socket must accept IPv6: listen on ":PORT" or
	// "[::]:PORT" (both families) or on this address.
	PublicIPv6 string
	// TURN configures the embedded TURN server and external relays.
	TURN TURNConfig
	// MetricsListen is the TCP address of the Prometheus endpoint
	// (/metrics, plain HTTP); empty disables it.
	MetricsListen string
	// DNSDomain is the mesh's DNS domain, sent to agents in the netmap;
	// empty means control.DefaultDNSDomain.
	DNSDomain string
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// EphemeralTimeout is how long a node of an ephemeral key may be
	// offline before it is removed (default 5m). EphemeralGrace is the time
	// such a node gets to open its first stream after registering, or to
	// reconnect after a coordinator restart (default 10m).
	EphemeralTimeout time.Duration
	EphemeralGrace   time.Duration
	// AuthFailBurst failed auth attempts (unknown auth key, bad credential)
	// are allowed from one source IP before it is refused with 429; the
	// budget refills at AuthFailPerMinute. Defaults 20 and 30; a negative
	// burst disables the limit.
	AuthFailBurst     int
	AuthFailPerMinute float64
	// IPHoldback is how long a removed node's overlay address is held back
	// before another node gets it: 0 means DefaultIPHoldback, negative
	// means no hold-back.
	IPHoldback time.Duration
	// MaxConnsPerSource caps the API connections open at once from one
	// source (an IPv4 address or an IPv6 /64); more are closed on accept.
	// Default 256 (agents behind one NAT address each hold a stream);
	// negative disables the cap.
	MaxConnsPerSource int
	// JoinBurst registrations by one auth key may happen at once; the
	// budget refills at JoinPerMinute. Defaults 100 and 600; a negative
	// burst disables the limit. Rejoining with a credential is free.
	JoinBurst     int
	JoinPerMinute float64
	// MaxNodes caps the nodes of the mesh (default and upper bound
	// control.MaxNodes), so the netmap stays within what agents read.
	MaxNodes int

	// For tests: the hub's batch window and restart grace (0: the hub's
	// defaults).
	batchWindow, restartGrace time.Duration
}

// Defaults of the auth failure limit.
const (
	defaultAuthFailBurst     = 20
	defaultAuthFailPerMinute = 30
)

// Repeated log lines that outsiders can trigger: at most logBurst of each
// message per logInterval; the rest are counted in the next one that passes.
const (
	logBurst    = 20
	logInterval = time.Minute
)

// shutdownTimeout bounds a clean shutdown.
const shutdownTimeout = 10 * time.Second

// Server is a running coordinator.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *Store
	hub   *hub.Hub
	tls   *tls.Config

	httpSrv *http.Server
	httpLn  net.Listener
	stun    *stunserver.Server
	turn    *relay.Server
	// relays mints each node's relay list.
	relays     *relayList
	turnSecret []byte
	// peers are the peer relays members offer (peerrelay.go).
	peers *peerRelays
	// usage counts what the embedded relay relays per node; nil without
	// the embedded relay.
	usage   *relay.Ledger
	started time.Time
	// usageOut copies the usage ledgers into the store, for `usage` on
	// any replica (usage_flush.go).
	usageOut *usageFlusher
	// identity and challenges verify that a registering node holds its
	// WireGuard private key.
	identity   *identity
	challenges *challenges
	// replicas ties this coordinator to the others on its PostgreSQL
	// store; nil with SQLite.
	replicas *replicaLink

	// lock is the state dir's serve lock, held from New to Close.
	lock     *os.File
	adminSrv *http.Server
	adminLn  net.Listener
	limiter  *authLimiter
	// logLimit thins out log lines that outsiders can make us repeat.
	logLimit *logsafe.Limiter
	// joins limits registrations per auth key.
	joins   *ratelimit.Keyed
	life    lifecycle
	metrics *serverMetrics
	metSrv  *metrics.Server

	// streams counts live stream handlers, which http.Server.Shutdown does
	// not wait for once they have taken over their connection.
	streams sync.WaitGroup
	// Stream liveness timing; fields so tests can shorten them.
	pingInterval time.Duration
	pingTimeout  time.Duration
	pingReadRate int64
	// bodyTimeout bounds reading a request (see bodyDeadline); a field so
	// tests can shorten it.
	bodyTimeout time.Duration
	closeOnce   sync.Once
}

// New checks cfg, opens the store and loads the mesh. Call Run (or Listen
// then Serve), or Close to release the store.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		return nil, errors.New("new coordinator: listen address is empty")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("new coordinator: TLS needs both a certificate and a key")
	}
	if err := checkPublicIPv6(cfg.PublicIPv6); err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if err := checkPublicHost(cfg.PublicHost); err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if cfg.DNSDomain == "" {
		cfg.DNSDomain = control.DefaultDNSDomain
	}
	domain, err := control.NormalizeDNSDomain(cfg.DNSDomain)
	if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	cfg.DNSDomain = domain
	if cfg.EphemeralTimeout <= 0 {
		cfg.EphemeralTimeout = defaultEphemeralTimeout
	}
	if cfg.EphemeralGrace <= 0 {
		cfg.EphemeralGrace = defaultEphemeralGrace
	}
	if cfg.AuthFailBurst == 0 {
		cfg.AuthFailBurst = defaultAuthFailBurst
	}
	if cfg.AuthFailPerMinute <= 0 {
		cfg.AuthFailPerMinute = defaultAuthFailPerMinute
	}
	if cfg.JoinBurst == 0 {
		cfg.JoinBurst = defaultJoinBurst
	}
	if cfg.JoinPerMinute <= 0 {
		cfg.JoinPerMinute = defaultJoinPerMinute
	}
	if cfg.MaxNodes < 0 || cfg.MaxNodes > control.MaxNodes {
		return nil, fmt.Errorf("new coordinator: node cap %d: want 1 to %d", cfg.MaxNodes, control.MaxNodes)
	}
	if cfg.MaxConnsPerSource == 0 {
		cfg.MaxConnsPerSource = defaultMaxConnsPerSource
	}
	s := &Server{cfg: cfg, started: time.Now(), log: cfg.Logger, pingInterval: pingInterval, pingTimeout: pingTimeout, pingReadRate: pingReadRate, bodyTimeout: bodyTimeout,
		limiter:  newAuthLimiter(cfg.AuthFailBurst, cfg.AuthFailPerMinute),
		logLimit: logsafe.NewLimiter(logBurst, logInterval),
		joins:    newJoinLimiter(cfg.JoinBurst, cfg.JoinPerMinute),
		life:     lifecycle{ephemeral: newEphemeralTracker(cfg.EphemeralTimeout, cfg.EphemeralGrace)},
		metrics:  newServerMetrics(),
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("new coordinator: load TLS certificate: %w", err)
		}
		s.tls = &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			// WebSockets need HTTP/1.1; the API gains nothing from HTTP/2.
			NextProtos: []string{"http/1.1"},
		}
	}

	if cfg.StateDir == "" {
		return nil, errors.New("new coordinator: state directory is empty")
	}
	if was, err := statedir.Ensure(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	} else if was != 0 {
		s.log.Warn("state dir was readable by others; tightened to 0700", "dir", cfg.StateDir, "was", was.String())
	}
	lock, err := lockServe(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	store, err := OpenStoreAt(cfg.StateDir, cfg.Store)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	store.maxNodes = cfg.MaxNodes
	fail := func(err error) (*Server, error) {
		store.Close()
		lock.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if cfg.IPHoldback != 0 {
		store.SetIPHoldback(cfg.IPHoldback)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if store.fansOut() {
		if store.replica, err = loadReplicaID(cfg.StateDir); err != nil {
			return fail(err)
		}
		// At once: the others must not take a restarting replica's nodes
		// for a dead one's while it loads.
		if err := store.heartbeat(ctx); err != nil {
			return fail(err)
		}
	}
	// Nodes the store says are online stay so for a grace period, as the
	// agents were last told: those that reconnect at once cause no delta to
	// everyone, the others are marked offline after it (see
	// hub/netmapversion.go).
	hcfg := hub.Config{Store: hubStore{store}, Log: s.log, Metrics: s.metrics.hub,
		BatchWindow: cfg.batchWindow, RestartGrace: cfg.restartGrace}
	if store.fansOut() {
		// s.replicas is set below, before any stream or store change can
		// reach the hub.
		hcfg.Replicas = hubStore{store}
		hcfg.Forward = func(from, to uint64, frame []byte) bool { return s.replicas.forward(from, to, frame) }
		hcfg.Gone = s.nodeGone
		hcfg.Seen = s.remoteSeen
	}
	h, err := hub.New(ctx, hcfg)
	if err != nil {
		return fail(err)
	}
	s.metrics.registerHubGauges(h)
	s.store, s.hub = store, h
	warnSuspectKeys(h.Nodes(), s.log)
	if s.identity, err = loadServerIdentity(ctx, store, cfg.StateDir); err != nil {
		return fail(err)
	}
	if store.fansOut() {
		if s.challenges, err = newSharedChallenges(ctx, store, time.Now); err != nil {
			return fail(err)
		}
		if s.replicas, err = newReplicaLink(ctx, store, h, s.log); err != nil {
			return fail(err)
		}
		s.replicas.offered = s.remoteOffer
	} else if s.challenges, err = newChallenges(time.Now); err != nil {
		return fail(err)
	}
	// The TURN secret also derives each peer relay's secret, so it is
	// loaded even without the embedded relay.
	if s.turnSecret, err = loadServerTURNSecret(ctx, store, cfg.StateDir); err != nil {
		return fail(err)
	}
	if cfg.TURN.Embedded {
		s.usage = relay.NewLedger(s.started)
		s.metrics.registerRelayUsage(s.usage, h.Active)
	}
	if s.relays, err = newRelayList(cfg.TURN, s.turnSecret); err != nil {
		return fail(err)
	}
	s.relays.host6 = cfg.PublicIPv6
	s.peers = newPeerRelays(s.started)
	if s.usageOut, err = newUsageFlusher(); err != nil {
		return fail(err)
	}
	s.onNodeGone(s.peers.forget)
	s.metrics.registerPeerRelayUsage(s.peers, h.Active)
	s.store, s.hub, s.lock = store, h, lock
	if err := s.loadEphemeral(ctx); err != nil {
		return fail(err)
	}
	s.adminSrv = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	s.httpSrv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// checkPublicHost accepts a host name or IP address without a port.
func checkPublicHost(h string) error {
	if h == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(h); err == nil || strings.ContainsAny(h, "/ ") {
		return fmt.Errorf("public host %q: want a host name or IP address without port", h)
	}
	return nil
}

// Store is the server's store.
func (s *Server) Store() *Store { return s.store }

// Listen binds the API and STUN sockets. After it returns, HTTPAddr and
// STUNAddr report the bound addresses (useful with port 0).
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	if s.cfg.STUNListen == "" && s.cfg.STUNAltListen != "" {
		ln.Close()
		return errors.New("a STUN alternate address needs a primary STUN address")
	}
	if s.cfg.STUNListen != "" {
		primary, extra := stunserver.SplitListen(s.cfg.STUNListen)
		st, err := stunserver.Listen(primary, s.cfg.STUNAltListen, s.log)
		if err != nil {
			ln.Close()
			return err
		}
		if err := st.BindExtra(extra); err != nil {
			st.Close()
			ln.Close()
			return err
		}
		st.Requests = s.metrics.stunRequests
		s.stun = st
	}
	if s.cfg.TURN.Embedded {
		// TURN on the STUN port shares the STUN server's socket.
		var udp net.PacketConn
		var extra []net.PacketConn
		if primary, _ := stunserver.SplitListen(s.cfg.STUNListen); s.stun != nil && sameUDPPort(primary, s.cfg.TURN.Listen) {
			udp = s.stun.ShareWithTURN()
			extra = s.stun.ShareExtrasWithTURN()
		}
		t, err := s.listenTURN(udp, extra)
		if err != nil {
			ln.Close()
			if s.stun != nil {
				s.stun.Close()
			}
			return err
		}
		s.turn = t
		s.onNodeGone(t.DropNode)
	}
	if s.cfg.PublicIPv6 != "" && s.stunServers6() == nil {
		ln.Close()
		if s.stun != nil {
			s.stun.Close()
		}
		if s.turn != nil {
			s.turn.Close()
		}
		return fmt.Errorf("a public IPv6 address (%s) needs a STUN socket that takes IPv6: add [::]:3478 or [%s]:3478 to the STUN listen addresses", s.cfg.PublicIPv6, s.cfg.PublicIPv6)
	}
	adminLn, err := admin.Listen(s.cfg.StateDir)
	if err != nil {
		ln.Close()
		if s.stun != nil {
			s.stun.Close()
		}
		if s.turn != nil {
			s.turn.Close()
		}
		return err
	}
	if s.cfg.MetricsListen != "" {
		ms, err := metrics.Listen(s.cfg.MetricsListen, s.metrics.reg, s.log)
		if err != nil {
			ln.Close()
			adminLn.Close()
			if s.stun != nil {
				s.stun.Close()
			}
			if s.turn != nil {
				s.turn.Close()
			}
			return err
		}
		s.metSrv = ms
	}
	s.httpLn, s.adminLn = ln, adminLn
	return nil
}

// turnServesSTUN tells whether STUN is answered only by the TURN server
// (no STUN server of its own).
func (s *Server) turnServesSTUN() bool {
	return s.turn != nil && s.stun == nil
}

// sameUDPPort tells whether two listen addresses would claim the same UDP
// port: same port, and the same host or a wildcard on either side.
func sameUDPPort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// TURNAddr is the embedded TURN server's UDP (and TCP) address, nil if
// disabled.
func (s *Server) TURNAddr() net.Addr {
	if s.turn == nil {
		return nil
	}
	return s.turn.UDPConn().LocalAddr()
}

// HTTPAddr is the API's bound address, nil before Listen.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// MetricsAddr is the metrics endpoint's bound address, nil if disabled.
func (s *Server) MetricsAddr() net.Addr {
	if s.metSrv == nil {
		return nil
	}
	return s.metSrv.Addr()
}

// STUNAddr is the STUN server's bound address, nil if disabled.
func (s *Server) STUNAddr() net.Addr {
	if s.turnServesSTUN() {
		return s.turn.UDPConn().LocalAddr()
	}
	if s.stun == nil {
		return nil
	}
	return s.stun.PrimaryAddr()
}

// STUNAltAddr is the STUN server's bound alternate address, nil if none.
func (s *Server) STUNAltAddr() net.Addr {
	if s.stun == nil {
		return nil
	}
	if a := s.stun.AlternateAddr(); a != nil {
		return a
	}
	return nil
}

// Run listens and serves until ctx is done, then shuts down cleanly.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.Close()
		return err
	}
	return s.Serve(ctx)
}

// Serve serves on the sockets bound by Listen until ctx is done or a socket
// fails, then shuts down: it closes every stream, marks every node offline
// and closes the store. It returns nil after a shutdown asked for by ctx.
func (s *Server) Serve(ctx context.Context) error {
	if s.httpLn == nil {
		return errors.New("serve: Listen was not called")
	}
	errc := make(chan error, 3)
	ln := newConnLimitListener(s.httpLn, s.cfg.MaxConnsPerSource, s.log, s.logLimit, s.metrics.connsRefused.Inc)
	scheme := "http"
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
		scheme = "https"
	}
	go func() {
		if err := s.httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	}()
	attrs := []any{"api", scheme + "://" + s.httpLn.Addr().String(), "state", s.store.Path()}
	if s.stun != nil {
		go func() {
			if err := s.stun.Serve(); err != nil {
				errc <- err
			}
		}()
		attrs = append(attrs, "stun", "udp://"+s.stun.PrimaryAddr().String())
		for _, a := range s.stun.ExtraAddrs() {
			attrs = append(attrs, "stun_extra", "udp://"+a.String())
		}
		if a := s.stun.AlternateAddr(); a != nil {
			attrs = append(attrs, "stun_alternate", "udp://"+a.String())
		}
	} else {
		attrs = append(attrs, "stun", "disabled")
	}
	if s.turn != nil {
		attrs = append(attrs, "turn", s.turn.UDPConn().LocalAddr().String()+" udp+tcp", "relay_ip", s.turn.RelayIP().String())
		if a := s.turn.TLSAddr(); a != nil {
			attrs = append(attrs, "turns", a.String())
		}
	}
	go func() {
		if err := s.serveAdmin(); err != nil {
			errc <- err
		}
	}()
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	go s.sweepLoop(sweepCtx)
	usageDone := make(chan struct{})
	go func() {
		s.usageLoop(sweepCtx)
		close(usageDone)
	}()
	if s.replicas != nil {
		s.replicas.start(sweepCtx)
		attrs = append(attrs, "replica", s.store.replica)
	}
	attrs = append(attrs, "admin", s.adminLn.Addr().String())
	s.log.Info("coordinator listening", attrs...)
	if s.relays == nil {
		s.log.Warn("no TURN relay configured: peers without a direct path will not connect")
	}

	var err error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down")
	case err = <-errc:
		s.log.Error("shutting down after failure", "err", err)
	}
	stopSweep()
	<-usageDone
	if s.replicas != nil {
		s.replicas.wait()
	}
	if cerr := s.shutdown(); err == nil {
		err = cerr
	}
	return err
}

// shutdown stops accepting, ends streams and writes the last batch.
func (s *Server) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown http: %w", err))
	}
	if err := s.adminSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown admin socket: %w", err))
	}
	s.hub.CloseAll("coordinator shutting down")
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, errors.New("shutdown: streams did not end in time"))
	}
	// The hub's last batch writes what changed. Online flags are left as
	// the agents last saw them (streams ending now do not flip them), so a
	// coordinator started again resumes its agents instead of sending
	// each a full netmap; it marks offline those that do not come back.
	s.hub.Shutdown()
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close releases the sockets and the store without a clean shutdown; Serve
// calls it itself.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		if s.httpLn != nil {
			s.httpSrv.Close()
			s.httpLn.Close() // in case Serve never ran
		}
		if s.stun != nil {
			if err := s.stun.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close stun: %w", err))
			}
		}
		if s.turn != nil {
			if err := s.turn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close turn: %w", err))
			}
		}
		if s.adminLn != nil {
			s.adminSrv.Close()
			s.adminLn.Close() // removes the socket file
		}
		if s.metSrv != nil {
			s.metSrv.Close()
		}
		s.hub.Shutdown()
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
		// Last: once released, an admin command may write the store.
		s.lock.Close()
	})
	return errors.Join(errs...)
}

// stunServers is the STUN list for an agent that reached us via r.
func (s *Server) stunServers(r *http.Request) []string {
	port := 0
	switch {
	case s.turnServesSTUN():
		port = s.turn.UDPPort()
	case s.stun != nil:
		port = s.stun.Port()
	default:
		return []string{}
	}
	host := s.stunHost(r)
	if host == "" {
		return []string{}
	}
	return []string{net.JoinHostPort(host, strconv.Itoa(port))}
}

// stunHost is the host a client that reached us via r is told to reach STUN
// (and the embedded TURN server) at, empty if there is none.
func (s *Server) stunHost(r *http.Request) string {
	host := s.cfg.PublicHost
	if host == "" {
		host = r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// Package agent is the meshvpn node: it registers with the coordinator,
// runs WireGuard on a TUN device, finds a path to every peer with ICE over
// the one UDP socket it shares with WireGuard, and answers the local API
// behind `meshvpn status`.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/filter"
	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/pionslog"
	"github.com/meshvpn/meshvpn/policy"
	"github.com/meshvpn/meshvpn/tun"
)

// Config is the agent's configuration; cmd/meshvpn fills it from flags.
type Config struct {
	Coordinator string // http(s)://host[:port]; may be a comma-separated list
	// Coordinators are more coordinators of the same mesh (sharing one
	// store) to fail over to, tried after Coordinator in this order.
	Coordinators []string
	AuthKey      string // needed for the first start only
	Hostname     string
	StateDir     string
	Socket       string
	TUN          string
	Port         uint16 // UDP port of the shared socket; 0 picks one
	MTU          int
	// CAFile, when set, is a PEM bundle trusted for the coordinator's TLS
	// certificate instead of the system roots (a self-hosted CA).
	CAFile string
	// NoPortmap: do not ask the gateway (PCP, NAT-PMP, UPnP) to forward the
	// UDP port (see portmap.go).
	NoPortmap bool
	// AcceptDNS points the host's DNS at the mesh resolver (systemd-resolved
	// or resolv.conf); without it the resolver still answers on
	// control.ResolverAddr.
	AcceptDNS bool
	// MetricsListen is the TCP address of the Prometheus endpoint (plain
	// HTTP, /metrics); empty disables it.
	MetricsListen string
	// RelayServer, when its Listen is set, runs a peer relay on this node
	// (relayserver.go).
	RelayServer RelayServerConfig
	// LazyPeers is LazyAuto (""), LazyOn or LazyOff: whether paths are
	// set up on demand (lazy.go); LazyIdle tears an unused one down
	// (0: DefaultLazyIdle).
	LazyPeers string
	LazyIdle  time.Duration
	// RelayClient is RelayClientShared or RelayClientPerPeer ("" is
	// per-peer; the command line defaults to shared).
	RelayClient string
	Logger      *slog.Logger
}

// Agent is a running node.
type Agent struct {
	cfg Config
	log *slog.Logger
	// logLimit thins out lines a peer can make us repeat.
	logLimit *logsafe.Limiter
	priv     Key
	pub      Key
	ctl      *controlClient
	wg       *wgDevice
	bind     *Bind
	mux      *ice.UniversalUDPMuxDefault
	net      *iceNet
	pion     logging.LoggerFactory
	tun      *tun.Device

	// portmap is nil with --no-portmap. Atomic, not under mu: peers read it
	// with their own lock held, and stopDataPlane takes mu then peer locks.
	portmap atomic.Pointer[portMapper]
	// sprays counts the birthday punches whose sockets are open now
	// (birthdaypath.go), bounded by birthdayMaxSprays.
	sprays atomic.Int32

	stop    context.CancelFunc // ends Run; `meshvpn down` calls it
	metrics *agentMetrics

	relays *relayManager
	shared *sharedRelay // the one relay client with --relay-client=shared
	// relaySrv is this node's peer relay, nil without --relay-server.
	relaySrv atomic.Pointer[peerRelay]
	nat      natState
	natInfo  natInfoQueue // natinfo.go
	dns      *meshDNS

	// filter enforces the access policy between TUN and WireGuard
	// (filtertun.go); policyFilter is the node's rules from the netmap.
	filter       *filter.Filter
	policyFilter *policy.Filter

	// prefix6 is the mesh's IPv6 overlay prefix (invalid with an older
	// coordinator), set once when joining; overlay6 says this node's IPv6
	// address is on the TUN device (overlay6.go).
	prefix6  netip.Prefix
	overlay6 atomic.Bool

	mu    sync.Mutex
	self  control.Node
	peers map[uint64]*peer
	stun  []string
	stun6 []string // IPv6 STUN servers, for IPv6 srflx candidates (ice6.go)
	// stunAlt are the STUN servers' alternate addresses, for telling a
	// symmetric NAT (a new mapping per destination) from the others.
	stunAlt []string
	// stunServers is the netmap's STUN list, for the filtering probe.
	stunServers []control.STUNServer
	// stunUsed is when the shared socket last asked each STUN address for
	// its mapping (freshSTUN).
	stunUsed map[netip.AddrPort]time.Time

	// Paths on demand (lazy.go, lazytun.go): whether the agent is lazy now,
	// the data path's index of peers by overlay address, the packets
	// queued for paths being set up, and the peers waiting for their
	// first handshake. pace is the session budget (pace.go).
	lazyActive atomic.Bool
	lazy       *lazyTUN
	ipIndex    atomic.Pointer[map[netip.Addr]*peer]
	queued     atomic.Int64
	ready      readyWatch
	pace       pacer
	// consentChecks counts the direct lanes' consent checks sent
	// (consent.go).
	consentChecks atomic.Uint64
}

// Run starts the agent and blocks until ctx ends, then removes the TUN
// device and returns nil. Errors before the tunnel is up (bad flags, refused
// auth key, no privileges) are returned and leave nothing behind.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StateDir == "" || cfg.Socket == "" || cfg.TUN == "" {
		return errors.New("state dir, socket and TUN name must not be empty")
	}
	mode, err := ParseLazyMode(cfg.LazyPeers)
	if err != nil {
		return err
	}
	cfg.LazyPeers = mode
	if cfg.LazyIdle < 0 {
		return fmt.Errorf("--lazy-idle %v must not be negative", cfg.LazyIdle)
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("hostname: %w (pass --hostname)", err)
		}
		cfg.Hostname = h
	}
	ctl, err := newControlClient(append([]string{cfg.Coordinator}, cfg.Coordinators...), cfg.CAFile, cfg.Logger)
	if err != nil {
		return err
	}
	if err := tun.CheckPrivileges(); err != nil {
		return err
	}
	if err := ensureStateDir(cfg.StateDir, cfg.Logger); err != nil {
		return err
	}
	recoverHostDNS(cfg)
	priv, err := loadOrCreateKey(cfg.StateDir)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	a := &Agent{
		stop: stop,
		cfg:  cfg,
		log:  cfg.Logger,
		// At most 10 of each such line a minute.
		logLimit: logsafe.NewLimiter(10, time.Minute),
		priv:     priv,
		pub:      priv.Public(),
		ctl:      ctl,
		peers:    make(map[uint64]*peer),
	}
	a.relays = &relayManager{a: a}
	a.ready.a = a
	a.updateLazy(0)
	a.shared = &sharedRelay{a: a}
	ctl.pubKey = a.pub.String()
	ctl.priv = priv
	ctl.onRefused = a.dropAllPeers
	a.metrics = newAgentMetrics(a.Status)
	a.registerLazyMetrics()
	a.registerConsentMetrics()
	st, err := a.join(ctx)
	if err != nil {
		if ctx.Err() != nil {
			a.log.Info("stopped before joining the mesh", "last_error", err)
			return nil
		}
		return err
	}
	lapi, err := listenLocalAPI(cfg.Socket)
	if err != nil {
		return err
	}
	defer lapi.Close()
	if err := a.startDataPlane(st); err != nil {
		return err
	}
	defer a.stopDataPlane()
	a.startDNS(netip.MustParseAddr(st.IP))
	defer a.stopDNS() // before the TUN goes: resolved forgets the link then
	a.refreshNames()
	a.startPortmap(ctx)
	defer a.stopPortmap() // before the data plane stops: deletes the router's forward
	if cfg.MetricsListen != "" {
		ms, err := metrics.Listen(cfg.MetricsListen, a.metrics.reg, a.log)
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	if cfg.RelayServer.Listen != "" {
		rs, err := a.startRelayServer(ctx, st.Credential)
		if err != nil {
			return err
		}
		a.relaySrv.Store(rs)
		defer rs.close()
	}
	go serveLocalAPI(lapi, a)

	a.log.Info("meshvpn up", "name", st.Name, "ip", st.IP, "ip6", st.IP6, "tun", a.tun.IfName(), "port", a.bind.Port())
	go a.ctl.runStream(ctx, st.Credential, a.handleMessage)
	a.tickLoop(ctx)
	a.log.Info("shutting down")
	return nil
}

// join registers with the coordinator: with the stored credential when there
// is one, with the auth key otherwise (or when the credential is refused).
func (a *Agent) join(ctx context.Context) (*nodeState, error) {
	old, err := loadNodeState(a.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	req := control.RegisterRequest{Hostname: a.cfg.Hostname, PublicKey: a.pub.String()}
	if old != nil && old.Credential != "" && a.ctl.hasURL(old.Coordinator) {
		req.Credential = old.Credential
		resp, err := a.ctl.register(ctx, req)
		if err == nil {
			return a.saveJoin(resp)
		}
		var refused *refusedError
		if !errors.As(err, &refused) || a.cfg.AuthKey == "" {
			if errors.As(err, &refused) {
				return nil, fmt.Errorf("stored node credential was refused (%s); start again with --authkey to rejoin", refused.msg)
			}
			return nil, err
		}
		a.log.Warn("stored node credential refused, registering with the auth key", "reason", refused.msg)
		req.Credential = ""
	}
	if a.cfg.AuthKey == "" {
		return nil, errors.New("this node has not joined a mesh yet: --authkey is required on the first start")
	}
	req.AuthKey = a.cfg.AuthKey
	resp, err := a.ctl.register(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("register with auth key: %w", err)
	}
	return a.saveJoin(resp)
}

func (a *Agent) saveJoin(resp *control.RegisterResponse) (*nodeState, error) {
	if ip, err := netip.ParseAddr(resp.IP); err != nil || ip == control.ResolverAddr {
		return nil, fmt.Errorf("coordinator gave an invalid overlay address %q", resp.IP)
	}
	prefix := resp.Prefix
	if _, err := netip.ParsePrefix(prefix); err != nil {
		prefix = control.OverlayPrefix.String()
	}
	st := &nodeState{
		Coordinator: a.ctl.coordinatorURL().String(),
		NodeID:      resp.NodeID,
		Name:        resp.Name,
		IP:          resp.IP,
		Prefix:      prefix,
		Credential:  resp.Credential,
	}
	if ip6, p6 := overlay6FromJoin(resp); ip6.IsValid() {
		st.IP6, st.Prefix6 = ip6.String(), p6.String()
		a.prefix6 = p6
	}
	if err := saveNodeState(a.cfg.StateDir, st); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.self = control.Node{ID: st.NodeID, Name: st.Name, IP: st.IP, IP6: st.IP6, PublicKey: a.pub.String(), Online: true}
	a.mu.Unlock()
	return st, nil
}

// startDataPlane creates the TUN device, the WireGuard device on the shared
// socket and the ICE mux on top of that socket.
func (a *Agent) startDataPlane(st *nodeState) error {
	ip := netip.MustParseAddr(st.IP)
	prefix := netip.MustParsePrefix(st.Prefix)
	td, err := tun.Create(tun.Config{Name: a.cfg.TUN, MTU: a.cfg.MTU, Addr: ip, Routes: []netip.Prefix{prefix}})
	if err != nil {
		return err
	}
	a.tun = td
	a.startOverlay6(st)
	a.bind = NewBind()
	a.filter = filter.New()
	// The lazy wrapper outside the filter: what it queues has passed the
	// policy already.
	a.lazy = newLazyTUN(a, &filterTUN{Device: td, f: a.filter}, prefix)
	dev := device.NewDevice(a.lazy, a.bind, newWGLogger(a.log.With("component", "wireguard")))
	a.wg = &wgDevice{dev: dev}
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", a.priv.Hex(), a.cfg.Port)); err != nil {
		dev.Close()
		return fmt.Errorf("configure WireGuard: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return fmt.Errorf("start WireGuard (UDP port %d): %w", a.cfg.Port, err)
	}
	if a.bind.Port() == 0 {
		dev.Close()
		return errors.New("start WireGuard: UDP socket did not open")
	}
	a.net, err = newICENet(td.IfName())
	if err != nil {
		dev.Close()
		return err
	}
	// pion's warnings are routine while paths form; its errors stay
	// visible.
	lf := pionslog.New(a.log, slog.LevelWarn)
	a.pion = lf
	a.mux = ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
		UDPConn: a.bind.STUNConn(),
		Net:     a.net,
		Logger:  lf.NewLogger("udpmux"),
	})
	return nil
}

func (a *Agent) stopDataPlane() {
	a.mu.Lock()
	for _, p := range a.peers {
		p.close()
	}
	a.mu.Unlock()
	if a.mux != nil {
		a.mux.Close()
	}
	a.bind.STUNConn().Close()
	a.shared.close()
	// Closing the device closes the TUN; the kernel drops its address and
	// routes with it.
	a.wg.dev.Close()
}

// ICE timings. Checks go out every 50 ms while connecting so the first
// overlay packet follows the agent's start within a second or so. On the
// relay lane's sessions, pion's keepalives check the selected pair every
// second; one that stops answering is declared disconnected after 3 s and
// failed 10 s later. The direct lane's sessions have none of these: the
// agent checks consent itself, often only while the tunnel carries data
// (consent.go), and a session still checking after iceCheckingTimeout has
// failed (pion's own failed timeout would also end a connected session).
const (
	iceCheckInterval     = 50 * time.Millisecond
	iceMaxRequests       = 100 // per pair: 5 s of checks, long enough to learn peer-reflexive addresses
	iceKeepalive         = 1 * time.Second
	iceDisconnected      = 3 * time.Second
	iceFailed            = 10 * time.Second
	iceCheckingTimeout   = iceDisconnected + iceFailed // pion's, with both timers set
	iceSrflxMinWait      = 100 * time.Millisecond
	icePrflxMinWait      = 200 * time.Millisecond
	iceSTUNGatherTimeout = 3 * time.Second
)

// newICEAgent makes the ICE agent of a direct session: host and
// server-reflexive candidates of both families on the shared socket
// (ice6.go says why and which family wins).
func (a *Agent) newICEAgent() (*ice.Agent, error) {
	urls := a.stunURIs(a.iceSTUN())
	return ice.NewAgentWithOptions(append(a.iceOptions(),
		// Consent is the agent's own (consent.go): no keepalive, and no
		// timer that would end a connected session. (pion wakes every 2 s
		// all the same, and would ping the pair on every wake with any
		// keepalive set, however long.)
		ice.WithKeepaliveInterval(0),
		ice.WithDisconnectedTimeout(0),
		ice.WithFailedTimeout(0),
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive}),
		ice.WithUDPMux(a.mux),
		ice.WithUDPMuxSrflx(srflxMux{a.mux}),
		ice.WithUrls(urls),
		ice.WithSrflxAcceptanceMinWait(iceSrflxMinWait),
		ice.WithPrflxAcceptanceMinWait(icePrflxMinWait),
		ice.WithSTUNGatherTimeout(iceSTUNGatherTimeout),
	)...)
}

// iceOptions are the settings both lanes' ICE agents share; the direct
// lane's replace the consent timers.
func (a *Agent) iceOptions() []ice.AgentOption {
	return []ice.AgentOption{
		ice.WithNet(a.net),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithCheckInterval(iceCheckInterval),
		ice.WithMaxBindingRequests(iceMaxRequests),
		ice.WithKeepaliveInterval(iceKeepalive),
		ice.WithDisconnectedTimeout(iceDisconnected),
		ice.WithFailedTimeout(iceFailed),
		ice.WithLoggerFactory(a.pion),
	}
}

func (a *Agent) stunURLs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stun
}

func (a *Agent) sendSignal(s control.Signal) {
	a.ctl.send(control.Message{Type: control.MsgSignal, Signal: &s})
}

// tickLoop drives every peer's repairs once a second until ctx ends.
func (a *Agent) tickLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.relays.tick(now)
			a.shared.tick(now) // relayshared.go
			a.natTick(now)
			a.natInfoTick(now)   // natinfo.go
			a.sampleTraffic(now) // liveness.go
			a.lazyTick(now)      // lazy.go
			for _, p := range a.peerList() {
				p.tick(now)
			}
		}
	}
}

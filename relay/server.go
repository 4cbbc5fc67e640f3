package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/internal/pionslog"
	"github.com/meshvpn/meshvpn/internal/sockbuf"
)

// Config configures a relay server: the coordinator's embedded relay or a
// node's peer relay (meshvpn up --relay-server).
type Config struct {
	// Listen is the UDP and TCP address. UDP, when not nil, is a socket the
	// server shares with a STUN server instead (see SharedConn); TCP then
	// binds the same port.
	Listen string
	UDP    net.PacketConn
	// Extra are more shared UDP sockets served (an IPv6 address beside the
	// IPv4 one: RFC 6156 allocations of IPv4 relay addresses).
	Extra []net.PacketConn
	// TLSListen is the TLS (turns:) address, served with TLS.
	TLSListen string
	TLS       *tls.Config
	// RelayIP is the address relayed packets come from, as clients must see
	// it (see PickAddress).
	RelayIP netip.Addr
	// MinPort and MaxPort bound the relay ports (default 49152-65535).
	MinPort, MaxPort uint16
	// AllowPeers are private ranges the relay may reach anyway.
	AllowPeers []netip.Prefix
	// OnlyPeers, when set, narrows who the relay relays to: besides its own
	// allocations, only peer addresses it says yes to (a peer relay relays
	// only to the mesh's relays, see the agent's relayserver.go).
	OnlyPeers func(netip.Addr) bool
	// Hairpin delivers between the relay's own allocations on this host
	// while RelayIP is not one of the host's addresses (a relay behind a
	// NAT; see hairpin.go).
	Hairpin bool
	// AllocationLifetime is the longest a UDP allocation lives without a
	// refresh (default 2m; tests shorten it).
	AllocationLifetime time.Duration
	// Secret returns the secret credentials are verified with (see
	// MintCredential); nil refuses every credential (a peer relay before
	// the coordinator gave it its secret).
	Secret func() []byte
	// Active tells whether a node may still relay; Members is how many
	// nodes the mesh has (the allocation quota grows with it).
	Active  func(id uint64) bool
	Members func() int
	// Usage, when not nil, is where the server counts what it relays per
	// node; otherwise it keeps a ledger of its own (Server.Usage).
	Usage *Ledger
	Log   *slog.Logger
}

// Realm is the TURN realm of every relay of the mesh.
const Realm = "meshvpn"

const (
	defaultRelayMinPort = 49152
	defaultRelayMaxPort = 65535
	// defaultAllocationLifetime is what the relay grants, and the most it
	// keeps a UDP allocation without a refresh whatever LIFETIME the client
	// asked for (pion grants up to an hour). pion's client refreshes at half
	// the granted lifetime, so agents refresh every minute and a refresh
	// has a minute of retransmissions before it is late; an allocation
	// whose client went away is gone within 2 minutes.
	defaultAllocationLifetime = 2 * time.Minute
)

// Server is the embedded relay.
type Server struct {
	srv     *turn.Server
	udp     net.PacketConn
	tcp     net.Listener
	tls     net.Listener
	extra   []net.PacketConn // shared STUN sockets besides udp
	relayIP netip.Addr
	udpPort int
	tlsPort int
	log     *slog.Logger

	allocs *relayAllocs
	fast   *fastSides
	own    *ownAddrs
	active func(uint64) bool
	stop   chan struct{}
	done   chan struct{}
}

// Listen starts a relay server.
func Listen(cfg Config) (*Server, error) {
	relayIP, log, extra, tlsCfg := cfg.RelayIP, cfg.Log, cfg.Extra, cfg.TLS
	if !relayIP.Is4() {
		return nil, fmt.Errorf("turn relay address %v: want an IPv4 address", relayIP)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Secret == nil || cfg.Active == nil || cfg.Members == nil {
		return nil, errors.New("turn: config needs Secret, Active and Members")
	}
	minPort, maxPort := cfg.MinPort, cfg.MaxPort
	if minPort == 0 && maxPort == 0 {
		minPort, maxPort = defaultRelayMinPort, defaultRelayMaxPort
	}
	if minPort == 0 || maxPort < minPort {
		return nil, fmt.Errorf("turn: bad relay port range %d-%d", minPort, maxPort)
	}
	var err error
	t := &Server{relayIP: relayIP, log: log, extra: extra, active: cfg.Active}
	fail := func(err error) (*Server, error) {
		t.closeSockets()
		return nil, err
	}
	if t.udp, t.tcp, err = listenUDPAndTCP(cfg.Listen, cfg.UDP); err != nil {
		return fail(err)
	}
	t.udpPort = t.udp.LocalAddr().(*net.UDPAddr).Port
	sockbuf.Grow(t.udp)
	if cfg.TLSListen != "" {
		if tlsCfg == nil {
			return fail(errors.New("turn: a TLS listener needs a certificate (--tls-cert and --tls-key)"))
		}
		ln, err := net.Listen(family("tcp", cfg.TLSListen), cfg.TLSListen)
		if err != nil {
			return fail(fmt.Errorf("listen turns %s: %w", cfg.TLSListen, err))
		}
		t.tlsPort = ln.Addr().(*net.TCPAddr).Port
		tc := tlsCfg.Clone()
		tc.NextProtos = nil
		t.tls = tls.NewListener(ln, tc)
	}

	policy := peerPolicy{allow: cfg.AllowPeers, own: relayIP, only: cfg.OnlyPeers}
	refusals := logsafe.NewLimiter(10, time.Minute)
	perm := func(client net.Addr, peer net.IP) bool {
		if policy.permit(peer) {
			return true
		}
		refusals.Log(log, slog.LevelWarn, "turn: refused relay to a protected address", "client", client.String(), "peer", peer.String())
		return false
	}
	bigNet, err := newBufferedNet()
	if err != nil {
		return fail(err)
	}
	// Relay sockets bind the address the TURN server listens on, so a
	// coordinator told to use one address does not relay on the others.
	bindIP := t.tcp.Addr().(*net.TCPAddr).IP
	bind := "0.0.0.0"
	if !bindIP.IsUnspecified() {
		bind = bindIP.String()
	}
	lifetime := cfg.AllocationLifetime
	if lifetime <= 0 {
		lifetime = defaultAllocationLifetime
	}
	ports := int(maxPort) - int(minPort) + 1
	t.allocs = newRelayAllocs(lifetime, func() int { return relayQuota(cfg.Members(), ports) })
	if cfg.Usage != nil {
		t.allocs.usage = cfg.Usage
	}
	fixed := []netip.Addr{relayIP}
	if a, ok := netip.AddrFromSlice(bindIP); ok {
		fixed = append(fixed, a.Unmap())
	}
	t.own = newOwnAddrs(fixed...)
	var bindAddr netip.Addr
	if a, ok := netip.AddrFromSlice(bindIP); ok {
		bindAddr = a.Unmap()
	}
	if cfg.Hairpin {
		t.allocs.hairpin = newHairpin(relayIP, bindAddr, t.allocs, t.own)
	}
	guard := hostGuard{allocs: t.allocs, own: t.own}
	gen := func(udp bool) turn.RelayAddressGenerator {
		return &relayGen{
			ports: &turn.RelayAddressGeneratorPortRange{
				RelayAddress: net.IP(relayIP.AsSlice()),
				Address:      bind,
				MinPort:      minPort,
				MaxPort:      maxPort,
				Net:          bigNet,
			},
			allocs: t.allocs,
			guard:  guard,
			udp:    udp,
		}
	}
	watched := &watchConn{PacketConn: t.udp, allocs: t.allocs, limit: NewSourceLimiter(AnswerBurst, AnswerPerSec)}
	// pion's logs at debug, errors too: they are mostly about single
	// clients, which a stranger can cause; our handlers log what matters.
	sc := turn.ServerConfig{
		Realm:         Realm,
		AuthHandler:   turnAuth(cfg.Secret, cfg.Active, log),
		QuotaHandler:  turnQuota(t.allocs, log),
		LoggerFactory: pionslog.New(log, slog.LevelDebug),
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: watched, RelayAddressGenerator: gen(true), PermissionHandler: perm,
		}},
		ListenerConfigs: []turn.ListenerConfig{{
			Listener: t.tcp, RelayAddressGenerator: gen(false), PermissionHandler: perm,
		}},
		AllocationLifetime: lifetime,
		// RFC 6156: a client that names no family gets IPv4, the only
		// relay family offered. pion's default (the family the client
		// came in over) would refuse every client reaching a dual-stack
		// socket over IPv6; with IPv4 an IPv6-only host gets a relay
		// address IPv4-only peers can reach.
		StrictAddressFamily: true,
	}
	for _, pc := range t.extra {
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn:            &watchConn{PacketConn: pc, allocs: t.allocs, limit: watched.limit},
			RelayAddressGenerator: gen(true), PermissionHandler: perm,
		})
	}
	// ChannelData of bound channels takes the batched fast path.
	t.fast = &fastSides{allocs: t.allocs, byAddr: map[string]*clientSide{}}
	for _, c := range sc.PacketConnConfigs {
		t.fast.attach(c.PacketConn)
	}
	sc.EventHandler = turn.EventHandler{OnChannelCreated: t.fast.channelCreated, OnChannelDeleted: t.fast.channelDeleted}
	if t.tls != nil {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: t.tls, RelayAddressGenerator: gen(false), PermissionHandler: perm,
		})
	}
	if t.srv, err = turn.NewServer(sc); err != nil {
		return fail(fmt.Errorf("start turn: %w", err))
	}
	t.stop, t.done = make(chan struct{}), make(chan struct{})
	go t.sweep(min(max(lifetime/8, 100*time.Millisecond), 5*time.Second))
	return t, nil
}

// sweep closes allocations past their deadline, re-reads the host's
// addresses and takes the relay usage into its buckets every tick, until
// close.
func (t *Server) sweep(every time.Duration) {
	defer close(t.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			if n := t.allocs.expire(now); n > 0 {
				t.log.Debug("turn: closed allocations not refreshed in time", "count", n)
			}
			t.own.refresh()
			if t.allocs.hairpin != nil {
				t.allocs.hairpin.refresh(t.own)
			}
			t.allocs.usage.roll(now)
			t.allocs.usage.prune(now, t.active)
		}
	}
}

// DropNode closes the allocations of a node that left the mesh: its
// credential is refused from now on, but relaying (Send indications and
// ChannelData) carries no credential.
func (t *Server) DropNode(id uint64) {
	if n := t.allocs.dropNode(id); n > 0 {
		t.log.Info("turn: closed the allocations of a node that left", "node", id, "count", n)
	}
}

// turnQuota refuses an Allocate with 486 when the node holds its quota.
func turnQuota(allocs *relayAllocs, log *slog.Logger) turn.QuotaHandler {
	quotaLog := logsafe.NewLimiter(10, time.Minute)
	return func(userID, realm string, src net.Addr) bool {
		node, err := strconv.ParseUint(userID, 10, 64)
		if err != nil {
			return false
		}
		if allocs.underQuota(node) {
			return true
		}
		quotaLog.Log(log, slog.LevelWarn, "turn: allocation quota reached", "node", node, "client", fmt.Sprint(src),
			"quota", allocs.quota())
		return false
	}
}

// Shorter names for pion's generator arguments.
type (
	allocateConf     = turn.AllocateListenerConfig
	allocateConnConf = turn.AllocateConnConfig
)

// listenUDPAndTCP binds addr over UDP (unless udp is given) and TCP on the
// same port, as TURN clients expect. With port 0 the kernel picks the UDP
// port, which TCP may already use; then it tries again with another.
func listenUDPAndTCP(addr string, udp net.PacketConn) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("turn listen address %q: %w", addr, err)
	}
	tries := 1
	if port == "0" && udp == nil {
		tries = 20
	}
	for i := 0; ; i++ {
		pc := udp
		if pc == nil {
			if pc, err = net.ListenPacket(family("udp", addr), addr); err != nil {
				return nil, nil, fmt.Errorf("listen turn udp %s: %w", addr, err)
			}
		}
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := net.Listen(family("tcp", tcpAddr), tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		if udp == nil {
			pc.Close()
		}
		if i+1 >= tries {
			return nil, nil, fmt.Errorf("listen turn tcp %s: %w", tcpAddr, err)
		}
	}
}

// family is network ("udp" or "tcp") for a listen address: IPv4 only
// (udp4, tcp4) unless addr's host is an IPv6 literal, "[::]:3478" meaning
// both families. The IPv4 default keeps ":3478" as it always was.
func family(network, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return network + "4"
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
		return network
	}
	return network + "4"
}

// bufferedNet opens relay sockets with large buffers (see sockbuf).
type bufferedNet struct{ *stdnet.Net }

func newBufferedNet() (*bufferedNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("turn: %w", err)
	}
	return &bufferedNet{n}, nil
}

func (n *bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		sockbuf.Grow(c)
	}
	return c, err
}

// turnAuth accepts credentials minted with the secret for nodes that are
// still members; it logs why it refuses, never the password.
func turnAuth(secretOf func() []byte, allowed func(id uint64) bool, log *slog.Logger) turn.AuthHandler {
	// The username comes from anyone, unauthenticated: it is logged cut
	// short and sanitized, and the line at most ten times a minute.
	refusals := logsafe.NewLimiter(10, time.Minute)
	return func(ra *turn.RequestAttributes) (string, []byte, bool) {
		node, err := ParseUsername(ra.Username, time.Now())
		if err == nil && !allowed(node) {
			err = errors.New("node is not a member")
		}
		secret := secretOf()
		if err == nil && len(secret) == 0 {
			err = errors.New("no secret yet")
		}
		if err != nil {
			refusals.Log(log, slog.LevelWarn, "turn: refused credential", "client", fmt.Sprint(ra.SrcAddr),
				"username", logsafe.ClipN(ra.Username, 48), "err", err)
			return "", nil, false
		}
		return strconv.FormatUint(node, 10), turn.GenerateAuthKey(ra.Username, ra.Realm, Password(secret, ra.Username)), true
	}
}

func (t *Server) closeSockets() {
	for _, c := range []interface{ Close() error }{t.udp, t.tcp, t.tls} {
		if c != nil {
			c.Close()
		}
	}
	for _, c := range t.extra {
		c.Close()
	}
}

// Close stops the server and closes its sockets (not a shared UDP one).
func (t *Server) Close() error {
	if t.stop != nil {
		close(t.stop)
		<-t.done
		t.stop = nil
	}
	if t.srv != nil {
		return t.srv.Close()
	}
	t.closeSockets()
	return nil
}

// PickAddress picks the address allocations are advertised with: publicIP
// when set, else publicHost when it is an IPv4 address, else the host's
// first global IPv4 address.
func PickAddress(publicIP, publicHost string) (netip.Addr, error) {
	if publicIP != "" {
		a, err := netip.ParseAddr(publicIP)
		if err != nil || !a.Is4() {
			return netip.Addr{}, fmt.Errorf("turn public ip %q: want an IPv4 address", publicIP)
		}
		return a, nil
	}
	if a, err := netip.ParseAddr(publicHost); err == nil && a.Is4() {
		return a, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("turn: list addresses: %w", err)
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, errors.New("turn: no IPv4 address to relay from; set --turn-public-ip")
}

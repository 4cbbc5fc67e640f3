package datapath

// One relay client per agent (issue 13, item 1).
//
// How a relayed path works with --relay-client=per-peer (the old path):
// every peer has a relay lane (the agent's lane.go), a pion/ice session
// with only TURN relay candidates on the relay the agent's relays.go chose
// by RTT. Each session makes
// its own TURN allocation (pion/turn's client, a goroutine hand-off per
// packet), the controlling side offers, both exchange relay candidates
// over signalling, ICE's checks and consent freshness decide when the lane
// is up, and peer.reconsiderLocked puts the relayed endpoint into
// WireGuard when the direct lane is not up. An agent with N peers holds N
// allocations.
//
// With --relay-client=shared (the default; this file, and the agent's
// relayshared.go for the peer side):
//   - RelayClient is one TURN allocation (UDP) on the chosen relay, made by
//     our own small TURN client: Allocate, Refresh, ChannelBind, with
//     long-term credentials, over a socket only it reads. It is kept warm:
//     allocated as soon as the relay probe says the relay works, so the
//     relayed path of every peer is ready before a direct one dies (a
//     fallback never waits for an allocation). One allocation costs the
//     relay one port however many peers there are. Measured in the lab
//     (TestRelayFallbackAndUpgrade): both sides on the relay 3.3 s after
//     the cut, as with per-peer sessions (3.2 s), with one allocation per
//     agent (TestSharedRelayOneAllocationPerAgent: 4 agents, 6 relayed
//     pairs: 4 allocations; per-peer: 12). Opening on first need was not
//     built: it would add an Allocate (two round trips), the address
//     exchange through the coordinator and a ChannelBind to the first
//     fallback, to save one port on agents that never relay.
//   - Each relayed peer gets a channel (ChannelBind to the peer's relayed
//     address, which also installs the permission, RFC 8656 §12), renewed
//     every channelRefresh. WireGuard's packets go out as ChannelData
//     written straight to the socket in one sendmmsg per batch, and come in
//     by recvmmsg, demultiplexed by channel number: no per-peer goroutine,
//     no ICE session.
//   - The peers exchange their relayed addresses by a "relay-addr" signal
//     on the relay lane (relayshared.go), which carries the address the
//     sender knows for the receiver as an acknowledgement.
//   - Liveness: the allocation's refreshes (lost → reallocate and
//     re-announce) plus WireGuard's handshakes and keepalives, which the
//     agent samples once a second (the agent's liveness.go); the relay lane counts as
//     up while the channel is bound.
//   - Direct → relay fallback and relay → direct upgrade are decided as
//     before by reconsiderLocked; only the relay lane's "up" comes from
//     here.
//   - TCP and TLS relays (a site that blocks UDP) get the same client over
//     a stream (relaystream.go): STUN and ChannelData framed on one TCP or
//     TLS connection (RFC 8656 §12.5: ChannelData padded to 4 bytes), so
//     such a site too holds one allocation per relay. The agent dials the
//     stream (it verifies TLS); a broken stream is a lost allocation (the
//     relay frees a stream's allocation with its connection). It is kept
//     warm as over UDP: on a UDP-blocked site every path but the LAN is
//     relayed, so the allocation is used from the first packet anyway, and
//     opening on first need would only add a connection, a TLS handshake
//     and an Allocate to every first packet. Measured in the lab
//     (TestSharedRelayOverStream): allocation 1 s after the relay probe,
//     relayed paths to all peers 1 s later; a stream cut at the site's
//     router is back 4.5 s after the cut ends; one stream and one
//     allocation for three relayed peers (per-peer sessions: three and
//     three, and their peers answer with three more).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"

	"github.com/meshvpn/meshvpn/internal/sockbuf"
	"github.com/meshvpn/meshvpn/internal/udpgso"
)

const (
	// channelRefresh renews a channel and its permission (permissions last
	// 5 minutes, channels 10).
	channelRefresh = 2 * time.Minute
	// turnRTO and turnTries: a request is resent after turnRTO, doubling,
	// turnTries times in all (about 3 s).
	turnRTO   = 200 * time.Millisecond
	turnTries = 4
	// minChannel/maxChannel: the TURN channel number range.
	minChannel = 0x4000
	maxChannel = 0x4fff
	// channelReuseAfter: a dropped channel's number is given out again only
	// once the relay has let its binding expire (10 minutes, RFC 8656
	// §12: a number cannot be bound to another peer before).
	channelReuseAfter = 11 * time.Minute
	// requestTimeout bounds one request with its resends.
	requestTimeout = 5 * time.Second
	// natKeepalive: with no request sent to the relay for this long, a
	// Binding request keeps our NAT's mapping to it open (Linux forgets a
	// UDP flow after 30 s unanswered, 120 s once it saw both ways), so the
	// relay can still deliver a peer's packets to an agent that has not
	// sent through it itself, e.g. one whose direct path looks fine while
	// the peer has already fallen back.
	natKeepalive = 20 * time.Second
)

// TURN methods and attributes that pion/stun does not name.
var (
	turnAllocate    = stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	turnRefresh     = stun.NewType(stun.MethodRefresh, stun.ClassRequest)
	turnChanBind    = stun.NewType(stun.MethodChannelBind, stun.ClassRequest)
	errTURNNoReply  = errors.New("no answer from relay")
	errStreamBroken = errors.New("relay stream broken")
)

// RelayServer is the relay a RelayClient allocates on.
type RelayServer struct {
	URL       string // as the coordinator lists it, for logs
	Server    string // host:port
	Transport string // "udp", "tcp" or "tls"
	Username  string
	Password  string
	// Dial opens the stream to a TCP or TLS relay: the agent's, which
	// verifies the relay's certificate and dials nothing but Server.
	Dial func(ctx context.Context) (net.Conn, error)
}

// RelayClient is this agent's one allocation on one relay server.
type RelayClient struct {
	log    *slog.Logger
	t      RelayServer
	server *net.UDPAddr // UDP: the relay, the socket and its batch view
	pc     *net.UDPConn
	bpc    *ipv4.PacketConn
	stream *relayStream // TCP and TLS (relaystream.go); nil over UDP
	// in takes the WireGuard messages that come on the channels: the
	// bind's routes; free and made are the reader's batches (readLoop).
	in   *relayPaths
	free chan *inBatch
	made int
	gro  bool // the socket coalesces datagrams (UDP_GRO; relayread.go)

	mu       sync.Mutex
	user     string
	pass     string
	realm    string
	nonce    string
	relayed  netip.AddrPort
	lifetime time.Duration
	next     uint16
	freed    []freedChan
	byPeer   map[netip.AddrPort]*RelayChan
	pending  map[[stun.TransactionIDSize]byte]chan *stun.Message

	chans  atomic.Pointer[map[uint16]*RelayChan] // copy-on-write, read per packet
	closed chan struct{}
	// check asks refreshLoop to refresh the allocation now (a relayed path
	// went silent: is the allocation still there?).
	check chan struct{}
	dead  atomic.Bool // the allocation was lost; a new client is needed
	gso   atomic.Bool // the socket sends with UDP GSO (relayout.go)
}

// freedChan is a channel number no longer in use, and since when.
type freedChan struct {
	num uint16
	at  time.Time
}

// RelayChan is one peer's channel on the allocation.
type RelayChan struct {
	c    *RelayClient
	num  uint16
	peer netip.AddrPort
	ep   *Endpoint
	// roam is the peer's hold after it left the relay (roam.go); nil
	// until the peer binds the channel.
	roam  atomic.Pointer[RoamHold]
	bound atomic.Bool
	at    time.Time // last successful bind
}

// NewRelayClient opens the socket (UDP) or the stream (TCP, TLS: t.Dial)
// and allocates on t. The WireGuard messages that arrive on its channels
// go to b.
func NewRelayClient(ctx context.Context, log *slog.Logger, t RelayServer, b *Bind) (*RelayClient, error) {
	c := &RelayClient{
		log: log, t: t,
		in: b.relays, free: make(chan *inBatch, relayReadBatches),
		user: t.Username, pass: t.Password, next: minChannel,
		byPeer:  make(map[netip.AddrPort]*RelayChan),
		pending: make(map[[stun.TransactionIDSize]byte]chan *stun.Message),
		closed:  make(chan struct{}),
		check:   make(chan struct{}, 1),
	}
	empty := map[uint16]*RelayChan{}
	c.chans.Store(&empty)
	switch t.Transport {
	case "udp":
		if err := c.openUDP(); err != nil {
			return nil, err
		}
		go c.readLoop()
	case "tcp", "tls":
		if t.Dial == nil {
			return nil, fmt.Errorf("shared relay client: no dialer for %s relay %s", t.Transport, t.Server)
		}
		conn, err := t.Dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to relay %s over %s: %w", t.Server, t.Transport, err)
		}
		c.stream = newRelayStream(conn)
		go c.streamReadLoop()
	default:
		return nil, fmt.Errorf("shared relay client: transport %q not supported", t.Transport)
	}
	if err := c.allocate(ctx); err != nil {
		c.Close()
		return nil, err
	}
	go c.refreshLoop()
	return c, nil
}

// openUDP opens the client's own UDP socket to the relay.
func (c *RelayClient) openUDP() error {
	server, err := net.ResolveUDPAddr("udp4", c.t.Server)
	if err != nil {
		return fmt.Errorf("resolve relay %s: %w", c.t.Server, err)
	}
	pc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return fmt.Errorf("open relay socket: %w", err)
	}
	sockbuf.Grow(pc)
	c.server, c.pc, c.bpc = server, pc, ipv4.NewPacketConn(pc)
	c.gso.Store(udpgso.Supported(pc))
	c.gro = udpgso.EnableGRO(pc)
	return nil
}

// Close ends the allocation's use (over UDP the relay lets it expire; a
// stream's allocation ends with the stream).
func (c *RelayClient) Close() {
	select {
	case <-c.closed:
		return
	default:
	}
	close(c.closed)
	if c.pc != nil {
		c.pc.Close()
	}
	if c.stream != nil {
		c.stream.conn.Close()
	}
}

// RelayedAddr is the allocation's address on the relay.
func (c *RelayClient) RelayedAddr() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.relayed
}

// SetCredentials takes fresh credentials for the next requests.
func (c *RelayClient) SetCredentials(user, pass string) {
	c.mu.Lock()
	c.user, c.pass = user, pass
	c.mu.Unlock()
}

// request sends a TURN request with long-term credentials (once the realm
// is known) and waits for its answer, resending on silence. A stale nonce
// is taken and the request sent once more.
func (c *RelayClient) request(ctx context.Context, typ stun.MessageType, attrs ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 2; attempt++ {
		c.mu.Lock()
		setters := []stun.Setter{stun.TransactionID, typ}
		setters = append(setters, attrs...)
		if c.realm != "" {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.user, c.realm, c.pass))
		}
		c.mu.Unlock()
		setters = append(setters, stun.Fingerprint)
		m, err := stun.Build(setters...)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", typ, err)
		}
		res, err := c.roundTrip(ctx, m)
		if err != nil {
			return nil, err
		}
		if res.Type.Class == stun.ClassSuccessResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		if code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(res) == nil && nonce.GetFrom(res) == nil {
				c.mu.Lock()
				c.realm, c.nonce = realm.String(), nonce.String()
				c.mu.Unlock()
				continue
			}
		}
		return res, fmt.Errorf("%s: error %d", typ.Method, code.Code)
	}
	return nil, fmt.Errorf("%s: credentials refused", typ.Method)
}

// roundTrip sends m and waits for the response with its transaction ID.
func (c *RelayClient) roundTrip(ctx context.Context, m *stun.Message) (*stun.Message, error) {
	ch := make(chan *stun.Message, 1)
	c.mu.Lock()
	c.pending[m.TransactionID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, m.TransactionID)
		c.mu.Unlock()
	}()
	rto, tries := turnRTO, turnTries
	var broken chan struct{} // nil over UDP: never ready
	if c.stream != nil {
		broken = c.stream.broken
		// A stream delivers or breaks: no resends (RFC 8489 §6.2.2), one
		// wait as long as the resends' over UDP.
		rto, tries = turnRTO*(1<<turnTries-1), 1
	}
	for try := 0; try < tries; try++ {
		if err := c.sendSTUN(m.Raw); err != nil {
			return nil, fmt.Errorf("send to relay: %w", err)
		}
		timer := time.NewTimer(rto)
		select {
		case res := <-ch:
			timer.Stop()
			return res, nil
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-c.closed:
			timer.Stop()
			return nil, net.ErrClosed
		case <-broken:
			timer.Stop()
			return nil, errStreamBroken
		case <-timer.C:
		}
		rto *= 2
	}
	return nil, errTURNNoReply
}

// sendSTUN sends one STUN message to the relay.
func (c *RelayClient) sendSTUN(p []byte) error {
	if c.stream != nil {
		return c.stream.write(c, p)
	}
	_, err := c.pc.WriteToUDP(p, c.server)
	return err
}

func (c *RelayClient) allocate(ctx context.Context) error {
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	res, err := c.request(ctx, turnAllocate, transport)
	if err != nil {
		return fmt.Errorf("allocate on %s: %w", c.t.Server, ExplainTURNError(err, ctx))
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return fmt.Errorf("allocate on %s: no relayed address: %w", c.t.Server, err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.mu.Lock()
	c.relayed = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	c.lifetime = lifetimeOf(res)
	c.mu.Unlock()
	return nil
}

// lifetimeOf reads LIFETIME; 10 minutes (the default) when absent.
func lifetimeOf(m *stun.Message) time.Duration {
	if v, err := m.Get(stun.AttrLifetime); err == nil && len(v) == 4 {
		return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	return 10 * time.Minute
}

// refreshLoop keeps the allocation and the channels alive. A refresh that
// fails marks the client dead: the agent makes a new allocation and the
// peers learn its address.
func (c *RelayClient) refreshLoop() {
	tick := time.NewTicker(refreshTick)
	defer tick.Stop()
	lastAlloc := time.Now()
	lastKeep := time.Now()
	for {
		var now time.Time
		select {
		case <-c.closed:
			return
		case <-c.check:
			now, lastAlloc = time.Now(), time.Time{}
		case now = <-tick.C:
		}
		c.mu.Lock()
		life := c.lifetime
		var due []*RelayChan
		for _, ch := range c.byPeer {
			if now.Sub(ch.at) >= channelRefresh {
				due = append(due, ch)
			}
		}
		c.mu.Unlock()
		if refreshDue(now.Sub(lastAlloc), life) {
			if err := c.refresh(life); err != nil {
				c.log.Warn("relay allocation lost", "relay", c.t.URL, "err", err)
				c.dead.Store(true)
				return
			}
			lastAlloc = now
		}
		for _, ch := range due {
			if err := c.bindChan(ch); err != nil {
				c.log.Info("relay channel refresh failed", "peer", ch.peer.String(), "err", err)
			}
		}
		if len(due) > 0 || lastAlloc == now {
			lastKeep = now
		} else if now.Sub(lastKeep) >= natKeepalive && c.pc != nil {
			// Its answer is read and dropped (no waiter). Over UDP only.
			_, _ = c.pc.WriteToUDP(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw, c.server)
			lastKeep = now
		}
	}
}

// refreshTick is how often refreshLoop looks at what is due.
const refreshTick = 5 * time.Second

// refreshDue tells whether an allocation refreshed since ago, granted for
// life, is renewed on this tick: at half its life, less half a tick. A
// plain "ago >= life/2" missed the tick that came a hair early (ticks are
// 5 s apart, as is half a 10 s lifetime) and refreshed at the next one, 10
// s on: as the allocation expired, so the relay no longer knew it and did
// not answer (e2e TestRelayAllocationLifetime, 1 run in 2 under load).
func refreshDue(ago, life time.Duration) bool {
	return ago >= life/2-refreshTick/2
}

// refresh renews the allocation for life.
func (c *RelayClient) refresh(life time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	lt := make([]byte, 4)
	binary.BigEndian.PutUint32(lt, uint32(life/time.Second))
	_, err := c.request(ctx, turnRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: lt})
	return err
}

// CheckSoon asks for a refresh of the allocation now.
func (c *RelayClient) CheckSoon() {
	select {
	case c.check <- struct{}{}:
	default:
	}
}

// Channel returns the channel to peer, binding it on the relay if new.
func (c *RelayClient) Channel(peer netip.AddrPort) (*RelayChan, error) {
	c.mu.Lock()
	ch := c.byPeer[peer]
	if ch == nil {
		var num uint16
		switch {
		case c.next <= maxChannel:
			num = c.next
			c.next++
		case len(c.freed) > 0 && time.Since(c.freed[0].at) > channelReuseAfter:
			num = c.freed[0].num
			c.freed = c.freed[1:]
		default:
			c.mu.Unlock()
			return nil, errors.New("relay channels used up")
		}
		ch = &RelayChan{c: c, num: num, peer: peer}
		ch.ep = &Endpoint{addr: peer, w: ch}
		c.byPeer[peer] = ch
		m := make(map[uint16]*RelayChan, len(c.byPeer))
		for _, x := range c.byPeer {
			m[x.num] = x
		}
		c.chans.Store(&m)
	}
	c.mu.Unlock()
	if ch.bound.Load() {
		return ch, nil
	}
	return ch, c.bindChan(ch)
}

// DropChannel forgets peer's channel (the relay lets it expire).
func (c *RelayClient) DropChannel(peer netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.byPeer[peer]
	if !ok {
		return
	}
	delete(c.byPeer, peer)
	c.freed = append(c.freed, freedChan{num: ch.num, at: time.Now()})
	m := make(map[uint16]*RelayChan, len(c.byPeer))
	for _, x := range c.byPeer {
		m[x.num] = x
	}
	c.chans.Store(&m)
}

func (c *RelayClient) bindChan(ch *RelayChan) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	num := make([]byte, 4)
	binary.BigEndian.PutUint16(num, ch.num)
	peer := stun.XORMappedAddress{IP: ch.peer.Addr().AsSlice(), Port: int(ch.peer.Port())}
	peerAttr := setterFunc(func(m *stun.Message) error { return peer.AddToAs(m, stun.AttrXORPeerAddress) })
	if _, err := c.request(ctx, turnChanBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: num}, peerAttr); err != nil {
		ch.bound.Store(false)
		return fmt.Errorf("channel bind to %s: %w", ch.peer, err)
	}
	c.mu.Lock()
	ch.at = time.Now()
	c.mu.Unlock()
	ch.bound.Store(true)
	return nil
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// Dead tells whether the allocation was lost: a new client is needed.
func (c *RelayClient) Dead() bool { return c.dead.Load() }

// URL is the relay's URL.
func (c *RelayClient) URL() string { return c.t.URL }

// Client is the allocation the channel is on.
func (ch *RelayChan) Client() *RelayClient { return ch.c }

// Peer is the peer's relayed address the channel is bound to.
func (ch *RelayChan) Peer() netip.AddrPort { return ch.peer }

// Endpoint is WireGuard's route through the channel (Bind.Reroute).
func (ch *RelayChan) Endpoint() *Endpoint { return ch.ep }

// SetRoam gives the channel the peer's roam hold (roam.go).
func (ch *RelayChan) SetRoam(r *RoamHold) { ch.roam.Store(r) }

// handleSTUN passes a STUN answer to the request waiting for it. Anything
// else (indications, answers nobody waits for) is dropped before it is
// copied: a relay that sends a stream of them costs no allocation.
func (c *RelayClient) handleSTUN(p []byte) {
	if !stun.IsMessage(p) {
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], p[8:20])
	c.mu.Lock()
	ch := c.pending[id]
	c.mu.Unlock()
	if ch == nil {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if err := m.Decode(); err != nil {
		return
	}
	select {
	case ch <- m:
	default:
	}
}

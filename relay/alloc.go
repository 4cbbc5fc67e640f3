package relay

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// relayAllocs is the relay's own table of its allocations, kept
// beside pion/turn's (which has no API to list or close them). It enforces
// the per-node quota, closes a node's allocations when it leaves the mesh,
// and closes UDP allocations that go without a refresh for longer than
// lifetime whatever LIFETIME their client asked for. Closing an
// allocation's relay socket is what makes pion drop the allocation.
type relayAllocs struct {
	lifetime time.Duration
	// quota is how many allocations one node may hold right now.
	quota func() int

	mu     sync.Mutex
	byPort map[int]*relayAlloc
	// byClient finds a UDP allocation by its client's address, once its
	// grant went out (see observeResponse).
	byClient map[string]*relayAlloc
	perNode  map[uint64]int
	// live has a bit set for each relay port with an allocation, read
	// without the lock on the data path (hostGuard).
	live [65536 / 64]atomic.Uint64
	// hairpin delivers between allocations of a relay behind a NAT.
	hairpin *hairpin
	// usage sums what each allocation relays (see turnusage.go).
	usage *Ledger
}

type relayAlloc struct {
	node   uint64
	port   int
	conn   *relayConn
	client string
	// deadline is when the allocation is closed unless refreshed; zero for
	// allocations made over TCP or TLS, which pion closes with their
	// connection.
	deadline time.Time
}

var (
	errQuota     = errors.New("turn: allocation quota reached")
	errTCPRelay  = errors.New("turn: TCP relaying (RFC 6062) is not offered")
	errRelayIPv6 = errors.New("turn: only IPv4 relay addresses are offered")
	errRelayPort = errors.New("turn: requesting a relay port (EVEN-PORT, RESERVATION-TOKEN) is not offered")
)

func newRelayAllocs(lifetime time.Duration, quota func() int) *relayAllocs {
	return &relayAllocs{lifetime: lifetime, quota: quota,
		byPort: map[int]*relayAlloc{}, byClient: map[string]*relayAlloc{}, perNode: map[uint64]int{},
		usage: NewLedger(time.Now())}
}

// Allocation quota. An agent holds one allocation per peer it relays to
// (its relay lane), briefly two while an ICE restart replaces one (the old
// one is released in the background, or expires if the release is lost),
// plus up to three test allocations (one per transport of each relay).
// So a node may hold relayQuotaBase + relayQuotaPerPeer x (members of the
// mesh); no node may take more than a quarter of the relay port range,
// which keeps ports for the others whatever the mesh size.
const (
	relayQuotaBase    = 8
	relayQuotaPerPeer = 2
	relayQuotaMin     = 16
)

// relayQuota is the per-node quota for a mesh of members nodes and a relay
// range of ports ports.
func relayQuota(members, ports int) int {
	q := relayQuotaBase + relayQuotaPerPeer*members
	return max(relayQuotaMin, min(q, ports/4))
}

// underQuota tells whether node may make one more allocation (pion's quota
// hook, answered with 486; open checks again under the same lock that
// counts).
func (t *relayAllocs) underQuota(node uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perNode[node] < t.quota()
}

// open makes a relay socket for node with mk and records it; udp says the
// client talks to us over UDP (so the allocation needs refreshes).
func (t *relayAllocs) open(node uint64, udp bool, now time.Time, mk func() (net.PacketConn, net.Addr, error), guard hostGuard) (net.PacketConn, net.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perNode[node] >= t.quota() {
		return nil, nil, errQuota
	}
	pc, addr, err := mk()
	if err != nil {
		return nil, nil, err
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		pc.Close()
		return nil, nil, fmt.Errorf("turn: relay address %v is not UDP", addr)
	}
	a := &relayAlloc{node: node, port: ua.Port}
	if udp {
		a.deadline = now.Add(t.lifetime)
	}
	meter := t.usage.meter(node)
	a.conn = &relayConn{PacketConn: pc, guard: guard, meter: meter, hairpin: t.hairpin, onClose: func() {
		t.forget(a)
		t.usage.release(meter, time.Now())
	}}
	if uc, ok := pc.(*net.UDPConn); ok {
		a.conn.fast = newRelayFast(uc)
	}
	t.byPort[a.port] = a
	t.setLive(a.port, true)
	t.perNode[node]++
	return a.conn, addr, nil
}

// setLive marks port as holding an allocation or not (under t.mu).
func (t *relayAllocs) setLive(port int, on bool) {
	w, bit := &t.live[port/64], uint64(1)<<(port%64)
	if on {
		w.Or(bit)
	} else {
		w.And(^bit)
	}
}

// isLive tells whether port holds an allocation of this relay.
func (t *relayAllocs) isLive(port int) bool {
	return port >= 0 && port < 65536 && t.live[port/64].Load()&(uint64(1)<<(port%64)) != 0
}

// forget drops a closed allocation from the table.
func (t *relayAllocs) forget(a *relayAlloc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byPort[a.port] != a {
		return
	}
	delete(t.byPort, a.port)
	t.setLive(a.port, false)
	if a.client != "" && t.byClient[a.client] == a {
		delete(t.byClient, a.client)
	}
	if t.perNode[a.node]--; t.perNode[a.node] <= 0 {
		delete(t.perNode, a.node)
	}
}

// granted records that the allocation on relay port was granted to client
// for lifetime (the LIFETIME of the Allocate response).
func (t *relayAllocs) granted(port int, client string, lifetime time.Duration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.byPort[port]
	if a == nil || a.deadline.IsZero() {
		return
	}
	if a.client != client {
		delete(t.byClient, a.client)
		a.client = client
		t.byClient[client] = a
	}
	a.deadline = now.Add(min(lifetime, t.lifetime))
}

// refreshed records a successful Refresh of client's allocation.
func (t *relayAllocs) refreshed(client string, lifetime time.Duration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.byClient[client]; a != nil && lifetime > 0 {
		a.deadline = now.Add(min(lifetime, t.lifetime))
	}
}

// expire closes the allocations whose deadline passed, and returns how
// many it closed.
func (t *relayAllocs) expire(now time.Time) int {
	return t.closeWhere(func(a *relayAlloc) bool { return !a.deadline.IsZero() && now.After(a.deadline) })
}

// dropNode closes every allocation of node (it left the mesh).
func (t *relayAllocs) dropNode(node uint64) int {
	return t.closeWhere(func(a *relayAlloc) bool { return a.node == node })
}

func (t *relayAllocs) closeWhere(match func(*relayAlloc) bool) int {
	t.mu.Lock()
	var doomed []*relayConn
	for _, a := range t.byPort {
		if match(a) {
			doomed = append(doomed, a.conn)
		}
	}
	t.mu.Unlock()
	for _, c := range doomed {
		c.Close() // pion's relay loop sees the error and deletes the allocation
	}
	return len(doomed)
}

// conn is the relay socket of the allocation on relay port, or nil.
func (t *relayAllocs) conn(port int) *relayConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.byPort[port]; a != nil {
		return a.conn
	}
	return nil
}

// count is how many allocations node holds.
func (t *relayAllocs) count(node uint64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perNode[node]
}

// relayConn is an allocation's relay socket. It never sends to, nor
// passes on packets from, a port of this host other than another
// allocation's (see hostGuard), counts what it relays, and leaves the table when closed.
type relayConn struct {
	net.PacketConn
	guard   hostGuard
	hairpin *hairpin
	meter   *allocMeter
	once    sync.Once
	onClose func()
	// fast is the batched path for channel-bound peers (relayfast.go);
	// nil when the socket is not a *net.UDPConn (tests).
	fast *relayFast
}

var errOwnHost = errors.New("turn: relaying to this host other than to its allocations is not allowed")

func (c *relayConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if !c.guard.mayReach(to) {
		return 0, errOwnHost
	}
	n, err := c.PacketConn.WriteTo(p, c.hairpin.out(to))
	if err == nil {
		c.meter.out(n)
	}
	return n, err
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.fast != nil {
		return c.readFast(p)
	}
	for {
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, from, err
		}
		if c.guard.mayReach(from) {
			c.meter.in(n)
			return n, c.hairpin.in(from), err
		}
	}
}

func (c *relayConn) Close() error {
	c.once.Do(func() {
		if c.fast != nil {
			c.unbindAll()
		}
		c.onClose()
	})
	return c.PacketConn.Close()
}

// relayGen makes relay sockets for pion/turn: UDP only, in the relay range,
// within the node's quota. One per listener; udp tells whether the
// listener's clients talk to us over UDP.
type relayGen struct {
	ports  relayPorts
	allocs *relayAllocs
	guard  hostGuard
	udp    bool
}

// relayPorts picks relay sockets in the port range (pion's own generator).
type relayPorts interface {
	Validate() error
	AllocatePacketConn(conf allocateConf) (net.PacketConn, net.Addr, error)
}

func (g *relayGen) Validate() error { return g.ports.Validate() }

func (g *relayGen) AllocatePacketConn(conf allocateConf) (net.PacketConn, net.Addr, error) {
	if conf.Network != "udp4" {
		return nil, nil, errRelayIPv6
	}
	if conf.RequestedPort != 0 {
		// pion picks it as reservation+1, possibly outside the range.
		return nil, nil, errRelayPort
	}
	node, err := strconv.ParseUint(conf.UserID, 10, 64)
	if err != nil || node == 0 {
		return nil, nil, fmt.Errorf("turn: allocation without a node (user %q)", logsafe.ClipN(conf.UserID, 32))
	}
	return g.allocs.open(node, g.udp, time.Now(), func() (net.PacketConn, net.Addr, error) {
		return g.ports.AllocatePacketConn(conf)
	}, g.guard)
}

// AllocateListener would make an RFC 6062 TCP allocation, AllocateConn its
// outgoing connections (a Connect request, even on a UDP allocation): the
// agent never needs them, and they would make the relay a TCP proxy.
func (g *relayGen) AllocateListener(allocateConf) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (g *relayGen) AllocateConn(allocateConnConf) (net.Conn, error) {
	return nil, errTCPRelay
}

package coordinator

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/pgtest"
	"github.com/meshvpn/meshvpn/relay"
	"github.com/meshvpn/meshvpn/relay/relaytest"
)

// relayPair allocates a relay address on s's embedded relay for each of
// nodes, as two agents behind symmetric NATs would (the relay refuses other
// ports of its own host), and makes their permissions for each other with
// a 1-byte packet each way (drained). It returns the relayed sockets and
// where each is reached.
func relayPair(t *testing.T, s *Server, nodes [2]uint64) ([2]net.PacketConn, [2]*net.UDPAddr) {
	t.Helper()
	var conns [2]net.PacketConn
	var at [2]*net.UDPAddr
	for i, id := range nodes {
		user, pass := relay.MintCredential(s.turnSecret, id, time.Now().Add(time.Hour))
		_, relayed, err := relaytest.Allocate(t, s.TURNAddr().String(), user, pass)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = relayed
		// The relay socket binds the TURN listen address, 127.0.0.1 (it
		// is advertised as the configured public IP).
		at[i] = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: relayed.LocalAddr().(*net.UDPAddr).Port}
	}
	// Permissions first (the first packets would be dropped without them).
	for i := range 2 {
		conns[i].WriteTo([]byte("x"), at[1-i])
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 2 {
		for {
			conns[i].SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, _, err := conns[i].ReadFrom(make([]byte, 100)); err != nil {
				break
			}
		}
	}
	return conns, at
}

// relayPackets relays out packets of outSize bytes from nodes[0] to
// nodes[1] through s's embedded relay, and in of inSize back (after the
// permission packets of relayPair).
func relayPackets(t *testing.T, s *Server, nodes [2]uint64, out, outSize, in, inSize int) {
	t.Helper()
	conns, at := relayPair(t, s, nodes)
	buf := make([]byte, 2000)
	send := func(from, to, n, size int) {
		for range n {
			if _, err := conns[from].WriteTo(make([]byte, size), at[to]); err != nil {
				t.Fatal(err)
			}
			conns[to].SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, _, err := conns[to].ReadFrom(buf); err != nil || got != size {
				t.Fatalf("relayed packet: %d bytes, %v", got, err)
			}
		}
	}
	send(0, 1, out, outSize)
	send(1, 0, in, inSize)
}

// usageRowOf finds node's row for relay (and, for an embedded relay, the
// replica running it).
func usageRowOf(rep UsageReport, node uint64, relayName, replica string) (UsageRow, bool) {
	for _, r := range rep.Rows {
		if r.NodeID == node && r.Relay == relayName && r.Replica == replica {
			return r, true
		}
	}
	return UsageRow{}, false
}

func rowCounts(r UsageRow) [4]uint64 {
	if r.BytesIn == nil {
		return [4]uint64{}
	}
	return [4]uint64{*r.BytesIn, *r.PacketsIn, *r.BytesOut, *r.PacketsOut}
}

// TestReplicasUsage runs two replicas on one PostgreSQL database, each
// with its embedded relay. Traffic through replica B's relay, and a peer
// relay's report to B, show in `usage` asked on replica A, next to A's own
// relay, within a few flushes; a peer relay's garbage counts (2^64-1) stop
// nothing. After B stops, A still shows what B counted.
func TestReplicasUsage(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	const flushEvery = 100 * time.Millisecond
	start := func(minPort uint16) (*Server, func() error) {
		s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Store: url, Logger: testLogger(t),
			TURN: TURNConfig{Embedded: true, Listen: "127.0.0.1:0", PublicIP: "127.0.0.2", MinPort: minPort, MaxPort: minPort + 999,
				AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
			func(s *Server) { s.usageOut.every = flushEvery })
		var once sync.Once
		stopOnce := func() (err error) {
			once.Do(func() { err = stop() })
			return err
		}
		t.Cleanup(func() { stopOnce() })
		return s, stopOnce
	}
	a, _ := start(42000)
	b, stopB := start(43000)
	if a.store.replica == "" || a.store.replica == b.store.replica {
		t.Fatalf("replica names %q and %q", a.store.replica, b.store.replica)
	}
	var nodes [2]uint64
	for i, name := range []string{"n1", "n2"} {
		nodes[i] = mustRegister(t, b.Handler(), control.RegisterRequest{AuthKey: newKey(t, b.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)}).NodeID
	}
	rel := mustRegister(t, b.Handler(), control.RegisterRequest{AuthKey: newKey(t, b.Store(), false, time.Hour), Hostname: "rel", PublicKey: newPublicKey(t)})
	waitHubActive := func(s *Server, id uint64) {
		deadline := time.Now().Add(5 * time.Second)
		for !s.hub.Active(id) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d not in replica %s's hub", id, s.store.replica)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, id := range []uint64{nodes[0], nodes[1], rel.NodeID} {
		waitHubActive(a, id)
	}
	ctx := t.Context()
	base, err := a.RelayUsage(ctx, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	baseB, _ := usageRowOf(base, nodes[0], EmbeddedRelay, b.store.replica)

	const outN, outSize, inN, inSize = 7, 300, 4, 1000
	relayPackets(t, b, nodes, outN, outSize, inN, inSize)
	// A peer relay reports to B: a real count for n1, garbage for n2.
	huge := uint64(math.MaxUint64)
	if code, _ := offerRelay(t, b, rel.Credential, "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478", Usage: []control.RelayUsage{
		{Node: nodes[0], BytesIn: 1000, PacketsIn: 10, BytesOut: 500, PacketsOut: 5},
		{Node: nodes[1], BytesIn: huge, PacketsIn: huge, BytesOut: huge, PacketsOut: huge},
	}}); code != 200 {
		t.Fatalf("relay offer: %d", code)
	}

	want := [4]uint64{inN * inSize, inN, outN * outSize, outN}
	peerWant := [4]uint64{1000, 10, 500, 5}
	check := func(rep UsageReport) error {
		got, ok := usageRowOf(rep, nodes[0], EmbeddedRelay, b.store.replica)
		if !ok {
			return fmt.Errorf("no row for n1 on replica B's embedded relay (%s)", b.store.replica)
		}
		c, c0 := rowCounts(got), rowCounts(baseB)
		// Plus at most the 1-byte packet that made each permission.
		d := [4]uint64{c[0] - c0[0], c[1] - c0[1], c[2] - c0[2], c[3] - c0[3]}
		for i := range d {
			if d[i] < want[i] || d[i] > want[i]+1 {
				return fmt.Errorf("n1 on B's embedded relay: in/pkts/out/pkts %v, want %v (+1 for the permission)", d, want)
			}
		}
		if _, ok := usageRowOf(rep, nodes[0], EmbeddedRelay, a.store.replica); !ok {
			return fmt.Errorf("no row for n1 on replica A's own embedded relay")
		}
		p, ok := usageRowOf(rep, nodes[0], PeerRelayPrefix+"rel", "")
		if !ok || rowCounts(p) != peerWant || p.ReportedAt == nil {
			return fmt.Errorf("n1 on peer:rel: %+v (present %v), want %v with reported_at", rowCounts(p), ok, peerWant)
		}
		if g, ok := usageRowOf(rep, nodes[1], PeerRelayPrefix+"rel", ""); !ok || rowCounts(g)[0] < math.MaxInt64 {
			return fmt.Errorf("n2's garbage on peer:rel: %+v (present %v), want it capped, not lost", rowCounts(g), ok)
		}
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep, err := a.RelayUsage(ctx, 0, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		err = check(rep)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage asked on replica A: %v", err)
		}
		time.Sleep(flushEvery)
	}
	// A report that counts nothing new still dates the relay's last
	// report on A.
	rep, err := a.RelayUsage(ctx, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	first, _ := usageRowOf(rep, nodes[0], PeerRelayPrefix+"rel", "")
	time.Sleep(10 * time.Millisecond)
	if code, _ := offerRelay(t, b, rel.Credential, "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478"}); code != 200 {
		t.Fatalf("relay offer: %d", code)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(flushEvery) {
		rep, err := a.RelayUsage(ctx, 0, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := usageRowOf(rep, nodes[0], PeerRelayPrefix+"rel", ""); r.ReportedAt != nil && r.ReportedAt.After(*first.ReportedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer:rel's empty report to B at A: reported_at stays %v", first.ReportedAt)
		}
	}
	// --since counts B's buckets too.
	rep, err = a.RelayUsage(ctx, 5*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := usageRowOf(rep, nodes[0], EmbeddedRelay, b.store.replica); !ok || rowCounts(got)[2] < outN*outSize {
		t.Errorf("usage --since 5m on A: n1 on B's relay %+v (present %v), want at least %d bytes out", rowCounts(got), ok, outN*outSize)
	}
	// B stops (its last flush on the way out): A still shows its counts.
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	rep, err = a.RelayUsage(ctx, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := check(rep); err != nil {
		t.Errorf("after B stopped: %v", err)
	}
}

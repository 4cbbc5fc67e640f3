package coordinator

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestRelayUsageCountsBothDirections relays real packets through the
// embedded server with pion's client: what the node sends to its peer
// counts as out, what the peer sends back as in, per packet and byte, and
// an external relay shows no counts at all.
func TestRelayUsageCountsBothDirections(t *testing.T) {
	s, stop := runServer(t, Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t),
		TURN: TURNConfig{Embedded: true, Listen: "127.0.0.1:0", PublicIP: "127.0.0.2", MinPort: 40000, MaxPort: 40999,
			AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			URLs:       []string{"turn:turn.example.com:3478"}, Secret: "external-secret"},
	})
	t.Cleanup(func() { stop() })
	// Two nodes relay to each other, as two agents behind symmetric NATs
	// do: the relay refuses other ports of its own host.
	var nodes [2]uint64
	var conns [2]net.PacketConn
	var at [2]*net.UDPAddr
	for i, name := range []string{"n1", "n2"} {
		nodes[i] = mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)}).NodeID
		user, pass := mintTURNCredential(s.turnSecret, nodes[i], time.Now().Add(time.Hour))
		_, relayed, err := allocate(t, s.TURNAddr().String(), user, pass)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = relayed
		// The relay socket binds the TURN listen address, 127.0.0.1, and
		// is advertised as 127.0.0.2.
		at[i] = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: relayed.LocalAddr().(*net.UDPAddr).Port}
	}
	node := nodes[0]
	relayed, peer := conns[0], conns[1]
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
	base, err := s.RelayUsage(0, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	const outN, outSize, inN, inSize = 5, 300, 3, 1000
	buf := make([]byte, 2000)
	for i := range outN {
		if _, err := relayed.WriteTo(make([]byte, outSize), at[1]); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := peer.ReadFrom(buf); err != nil || n != outSize {
			t.Fatalf("peer read %d: %d bytes, %v", i, n, err)
		}
	}
	for i := range inN {
		if _, err := peer.WriteTo(make([]byte, inSize), at[0]); err != nil {
			t.Fatal(err)
		}
		relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := relayed.ReadFrom(buf); err != nil || n != inSize {
			t.Fatalf("client read %d: %d bytes, %v", i, n, err)
		}
	}
	rep, err := s.RelayUsage(0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rows := func(rep UsageReport, node uint64) (embedded, external *UsageRow) {
		for i, r := range rep.Rows {
			if r.NodeID != node {
				continue
			}
			switch r.Relay {
			case EmbeddedRelay:
				embedded = &rep.Rows[i]
			case "turn:turn.example.com:3478":
				external = &rep.Rows[i]
			}
		}
		if embedded == nil || external == nil {
			t.Fatalf("rows %+v: want one per relay for node %d", rep.Rows, node)
		}
		return embedded, external
	}
	counted := func(r *UsageRow) [4]uint64 { return [4]uint64{*r.BytesIn, *r.PacketsIn, *r.BytesOut, *r.PacketsOut} }
	minus := func(a, b [4]uint64) [4]uint64 { return [4]uint64{a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]} }
	for i, want := range [][4]uint64{{inN * inSize, inN, outN * outSize, outN}, {outN * outSize, outN, inN * inSize, inN}} {
		now, _ := rows(rep, nodes[i])
		before, _ := rows(base, nodes[i])
		if got := minus(counted(now), counted(before)); got != want {
			t.Errorf("node %d: embedded relay counted in/pkts/out/pkts %v, want %v", i+1, got, want)
		}
	}
	embedded, external := rows(rep, node)
	baseA, _ := rows(base, node)
	if embedded.Node != "n1" || !embedded.Reported {
		t.Errorf("embedded row %+v: want node n1, reported", *embedded)
	}
	if external.Reported || external.BytesIn != nil || external.PacketsOut != nil {
		t.Errorf("external relay row %+v: want no counts (n/a)", *external)
	}
	// The metrics carry the same totals.
	var sb strings.Builder
	if _, err := s.Metrics().WriteTo(&sb); err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatUint(node, 10)
	for _, line := range []string{
		fmt.Sprintf(`meshvpn_coordinator_relay_bytes_total{node="%s",direction="out"} %d`, id, *embedded.BytesOut),
		fmt.Sprintf(`meshvpn_coordinator_relay_bytes_total{node="%s",direction="in"} %d`, id, *embedded.BytesIn),
		fmt.Sprintf(`meshvpn_coordinator_relay_packets_total{node="%s",direction="out"} %d`, id, *embedded.PacketsOut),
	} {
		if !strings.Contains(sb.String(), line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	// A closed allocation's counts stay in the totals.
	relayed.Close()
	time.Sleep(100 * time.Millisecond)
	rep2, _ := s.RelayUsage(0, time.Now())
	if after, _ := rows(rep2, node); *after.BytesOut-*baseA.BytesOut != outN*outSize {
		t.Errorf("after the allocation closed: out %d, want %d", *after.BytesOut-*baseA.BytesOut, outN*outSize)
	}
}

// TestUsageLedgerSince checks the --since windows: minute buckets for the
// last hour, hour buckets before, nothing older than a day (but the totals),
// and a window rounds out to whole buckets.
func TestUsageLedgerSince(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	l := newUsageLedger(t0)
	m7, m8 := l.meter(7), l.meter(8)
	// 10 bytes out for node 7 every minute for 30 hours, node 8 100 bytes
	// in at the first minute only.
	m8.in(100)
	for i := range 30 * 60 {
		now := t0.Add(time.Duration(i)*time.Minute + 30*time.Second)
		m7.out(10)
		l.roll(now)
	}
	end := t0.Add(30*time.Hour - 30*time.Second) // 15:59:30 on day 2
	l.roll(end)
	check := func(since time.Duration, wantOut7, wantIn8 uint64, wantFrom time.Time) {
		t.Helper()
		got, from, err := l.usage(since, end)
		if err != nil {
			t.Fatal(err)
		}
		if got[7].BytesOut != wantOut7 || got[8].BytesIn != wantIn8 || !from.Equal(wantFrom) {
			t.Errorf("since %s: node 7 out %d, node 8 in %d, from %s; want %d, %d, %s",
				since, got[7].BytesOut, got[8].BytesIn, from, wantOut7, wantIn8, wantFrom)
		}
	}
	check(0, 30*60*10, 100, t0)
	// 1 min back from 15:59:30 is 15:58:30: the 15:58 bucket counts too.
	check(time.Minute, 20, 0, end.Add(-time.Minute).Truncate(time.Minute))
	// 10 min back from 15:59:30 is 15:49:30: the 15:49 bucket counts too.
	check(10*time.Minute, 110, 0, end.Add(-10*time.Minute).Truncate(time.Minute))
	// 3 h back (12:59:30) reaches into the hour buckets: 12:00 whole to
	// 14:58, then minute buckets from 14:59 (younger than an hour).
	check(3*time.Hour, 4*60*10, 0, t0.Add(26*time.Hour))
	// 24 h back: the 15:00 hour of day 1 and later; node 8's first minute
	// (10:00 on day 1) is gone from the history but not from the totals.
	check(24*time.Hour, 25*60*10, 0, t0.Add(5*time.Hour))
	if _, _, err := l.usage(25*time.Hour, end); err == nil {
		t.Error("--since 25h accepted beyond the 24h history")
	}
	if n := len(l.buckets); n > 24+60+2 {
		t.Errorf("%d buckets kept, want at most %d", n, 24+60+2)
	}
	// Node 8 left the mesh: with no allocation and nothing in the history,
	// its totals go; node 7's (still relaying) stay.
	l.release(m8, end)
	l.prune(end, func(id uint64) bool { return false })
	if got, _, _ := l.usage(0, end); got[8] != (usageCounts{}) || got[7].BytesOut == 0 {
		t.Errorf("after prune: %+v", got)
	}
}

// TestUsageLedgerConcurrent counts from several goroutines per allocation
// while the ledger rolls and allocations close: nothing is lost or counted
// twice (run with -race).
func TestUsageLedgerConcurrent(t *testing.T) {
	l := newUsageLedger(time.Now())
	const workers, perWorker = 4, 5000
	var wg sync.WaitGroup
	for w := range workers {
		m := l.meter(uint64(w%2 + 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				m.out(3)
				m.in(2)
			}
			l.release(m, time.Now())
		}()
	}
	stop := make(chan struct{})
	rolled := make(chan struct{})
	go func() {
		defer close(rolled)
		for {
			select {
			case <-stop:
				return
			default:
				l.roll(time.Now())
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-rolled
	got, _, _ := l.usage(0, time.Now())
	for _, id := range []uint64{1, 2} {
		want := usageCounts{BytesIn: 2 * 2 * perWorker, PacketsIn: 2 * perWorker, BytesOut: 2 * 3 * perWorker, PacketsOut: 2 * perWorker}
		if got[id] != want {
			t.Errorf("node %d: %+v, want %+v", id, got[id], want)
		}
	}
	if len(l.live) != 0 {
		t.Errorf("%d meters still live after release", len(l.live))
	}
}

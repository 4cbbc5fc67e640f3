package coordinator

import (
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestPeerRelayGarbageNodesBounded: a member's peer relay reports the most
// rows a report may carry, all but one for nodes that are not members. Only
// the member's row reaches the store: the table grows with the mesh, not
// with what a relay says.
func TestPeerRelayGarbageNodesBounded(t *testing.T) {
	s := newTestServer(t)
	rel := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "rel", PublicKey: newPublicKey(t)})
	b := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "b", PublicKey: newPublicKey(t)})
	rows := make([]control.RelayUsage, control.MaxRelayUsageRows)
	rows[0] = control.RelayUsage{Node: b.NodeID, BytesIn: 1}
	for i := 1; i < len(rows); i++ {
		rows[i] = control.RelayUsage{Node: 1_000_000 + uint64(i), BytesIn: 1, PacketsIn: 1}
	}
	for range 2 {
		if code, _ := offerRelay(t, s, rel.Credential, "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478", Usage: rows}); code != 200 {
			t.Fatalf("relay offer: %d", code)
		}
	}
	if err := s.flushUsage(t.Context(), time.Now()); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.store.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM relay_usage WHERE relay_node = ?`, int64(rel.NodeID)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d stored rows for the peer relay, want 1 (its one member node)", n)
	}
}

// TestRelayUsageSurvivesRestart: a coordinator stopped cleanly leaves what
// its embedded relay counted in the store, and the next run on the same
// state directory shows it within --since.
func TestRelayUsageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t),
		TURN: TURNConfig{Embedded: true, Listen: "127.0.0.1:0", PublicIP: "127.0.0.2", MinPort: 44000, MaxPort: 44999,
			AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}
	s, stop := runServer(t, cfg)
	var nodes [2]uint64
	for i, name := range []string{"n1", "n2"} {
		nodes[i] = mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)}).NodeID
	}
	const outN, outSize = 5, 700
	relayPackets(t, s, nodes, outN, outSize, 0, 0)
	before, err := s.RelayUsage(t.Context(), 10*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	row, _ := usageRowOf(before, nodes[0], EmbeddedRelay, "")
	if c := rowCounts(row); c[2] < outN*outSize {
		t.Fatalf("first run: n1 out %d, want at least %d", c[2], outN*outSize)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	s2, stop2 := runServer(t, cfg)
	t.Cleanup(func() { stop2() })
	after, err := s2.RelayUsage(t.Context(), 10*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := usageRowOf(after, nodes[0], EmbeddedRelay, "")
	if !ok || rowCounts(got) != rowCounts(row) {
		t.Errorf("after a restart, usage --since 10m: n1 on the embedded relay %v (present %v), want the first run's %v", rowCounts(got), ok, rowCounts(row))
	}
}

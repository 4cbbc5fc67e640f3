package coordinator

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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
	for i, name := range []string{"n1", "n2"} {
		nodes[i] = mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)}).NodeID
	}
	conns, at := relayPair(t, s, nodes)
	node := nodes[0]
	relayed, peer := conns[0], conns[1]
	base, err := s.RelayUsage(t.Context(), 0, time.Now())
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
	rep, err := s.RelayUsage(t.Context(), 0, time.Now())
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
	rep2, _ := s.RelayUsage(t.Context(), 0, time.Now())
	if after, _ := rows(rep2, node); *after.BytesOut-*baseA.BytesOut != outN*outSize {
		t.Errorf("after the allocation closed: out %d, want %d", *after.BytesOut-*baseA.BytesOut, outN*outSize)
	}
}

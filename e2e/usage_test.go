package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// Sizes of one overlay ping as the embedded relay carries it.
const (
	usagePingPayload = 1000 // ping -s
	ipv4Header       = 20
	icmpHeader       = 8
	// A WireGuard transport data message is a 16-byte header (type,
	// receiver index, counter), the inner packet padded to a multiple of
	// 16, and a 16-byte Poly1305 tag.
	wgDataHeader = 16
	wgPadTo      = 16
	wgTag        = 16
	// The agent wraps each WireGuard message in a 4-byte TURN ChannelData
	// header on its leg to the relay; the relay counts the payload it
	// relays on the peer side, so the header is not in the count.
	channelDataCounted = 0
)

// relayedPingBytes is what the relay counts for one echo request or reply
// with payload bytes of data.
func relayedPingBytes(payload int) uint64 {
	inner := ipv4Header + icmpHeader + payload
	padded := (inner + wgPadTo - 1) / wgPadTo * wgPadTo
	return uint64(wgDataHeader + padded + wgTag + channelDataCounted)
}

// TestRelayUsageMatchesTransfer relays two symmetric-NAT agents through the
// embedded relay, sends a known number of pings of a known size, and checks
// that `usage --json` counted each node's bytes and packets in both
// directions within 5 % of what the pings put on the relay.
func TestRelayUsageMatchesTransfer(t *testing.T) {
	const metricsAddr = "127.0.0.1:9100"
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: []string{"--metrics-listen", metricsAddr}})
	})
	key := authKey(t, coord, true)
	a := addSiteAgent(t, lab, coord, "usea", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "useb", natlab.Symmetric)
	ctx := t.Context()
	startOnline(t, key, a, b)
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 40*time.Second); err != nil {
		t.Fatalf("overlay ping before the transfer: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "udp", meshlab.CoordinatorIP)
	checkRelayed(t, b, a, "udp", meshlab.CoordinatorIP)
	names := []string{a.Name, b.Name}
	before, _ := relayUsage(t, coord, names)
	const count = 2000
	out, err := a.Host.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.002", "-s", strconv.Itoa(usagePingPayload), "-w", "60", ipB)
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	sent, recv := pingCounts(t, out)
	after, ids := relayUsage(t, coord, names)
	per := relayedPingBytes(usagePingPayload)
	t.Logf("%d echo requests, %d replies of %d relayed bytes each", sent, recv, per)
	// a sends the requests and gets the replies; b the other way round.
	want := map[string][4]uint64{ // bytes in, packets in, bytes out, packets out
		a.Name: {recv * per, recv, sent * per, sent},
		b.Name: {sent * per, sent, recv * per, recv},
	}
	what := [4]string{"bytes in", "packets in", "bytes out", "packets out"}
	for _, name := range names {
		got := after[name].minus(before[name])
		t.Logf("%s: counted %v (in bytes/packets, out bytes/packets), want %v", name, got, want[name])
		for i, w := range want[name] {
			if diff := float64(got[i]) - float64(w); diff > 0.05*float64(w) || diff < -0.05*float64(w) {
				t.Errorf("%s: %s %d, want %d within 5%%", name, what[i], got[i], w)
			}
		}
	}
	// /metrics has the same counters, labelled with the node ID; read
	// after usage, so they may only have grown by the odd ICE check.
	raw, err := coord.Host.Run(ctx, "curl", "-sS", "--max-time", "5", "http://"+metricsAddr+metrics.Path)
	if err != nil {
		t.Fatalf("scrape coordinator metrics: %v", err)
	}
	m, err := metrics.Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		for i, key := range []string{
			`meshvpn_coordinator_relay_bytes_total{node="%d",direction="in"}`,
			`meshvpn_coordinator_relay_packets_total{node="%d",direction="in"}`,
			`meshvpn_coordinator_relay_bytes_total{node="%d",direction="out"}`,
			`meshvpn_coordinator_relay_packets_total{node="%d",direction="out"}`,
		} {
			key = fmt.Sprintf(key, ids[name])
			v, ok := m[key]
			if u := float64(after[name][i]); !ok || v < u || v > u*1.01 {
				t.Errorf("%s: %s = %v (present %v), want about %v as usage said", name, key, v, ok, u)
			}
		}
	}
	// The table shows the same rows.
	table, err := coord.Admin(ctx, "usage", "--since", "5m")
	if err != nil || !strings.Contains(table, "usea") || !strings.Contains(table, coordinator.EmbeddedRelay) {
		t.Errorf("usage table: %v\n%s", err, table)
	}
	t.Logf("usage --since 5m:\n%s", table)
}

type usageVec [4]uint64

func (u usageVec) minus(v usageVec) usageVec {
	return usageVec{u[0] - v[0], u[1] - v[1], u[2] - v[2], u[3] - v[3]}
}

// relayUsage reads `usage --json` and returns the embedded relay's counts
// and the node ID of each of the named nodes.
func relayUsage(t *testing.T, coord *meshlab.Coordinator, names []string) (map[string]usageVec, map[string]uint64) {
	t.Helper()
	got, ids := embeddedUsage(t, coord, names, "")
	for _, name := range names {
		if _, ok := got[name]; !ok {
			t.Fatalf("usage has no embedded-relay row for %s", name)
		}
	}
	return got, ids
}

// embeddedUsage reads `usage --json` on coord and returns the counts of
// replica's embedded relay (replica: its ID; empty with SQLite) and the
// node IDs, for those of the named nodes that have a row.
func embeddedUsage(t *testing.T, coord *meshlab.Coordinator, names []string, replica string) (map[string]usageVec, map[string]uint64) {
	t.Helper()
	out, err := coord.Admin(t.Context(), "usage", "--json")
	if err != nil {
		t.Fatalf("usage: %v\n%s", err, out)
	}
	var rep coordinator.UsageReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("usage --json: %v\n%s", err, out)
	}
	got, ids := map[string]usageVec{}, map[string]uint64{}
	for _, r := range rep.Rows {
		if !slices.Contains(names, r.Node) || r.Relay != coordinator.EmbeddedRelay || r.Replica != replica {
			continue
		}
		if !r.Reported || r.BytesIn == nil || r.BytesOut == nil || r.PacketsIn == nil || r.PacketsOut == nil {
			t.Fatalf("usage row %+v: embedded relay without counts", r)
		}
		got[r.Node] = usageVec{*r.BytesIn, *r.PacketsIn, *r.BytesOut, *r.PacketsOut}
		ids[r.Node] = r.NodeID
	}
	return got, ids
}

func pingCounts(t *testing.T, out string) (sent, recv uint64) {
	t.Helper()
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary in %q", out)
	}
	fmt.Sscan(m[1], &sent)
	fmt.Sscan(m[2], &recv)
	return sent, recv
}

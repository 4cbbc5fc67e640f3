package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRelayUsageOnAnyReplica runs two replicas on one PostgreSQL database (issue
// 11: the admin commands work against any replica). Two symmetric-NAT
// agents on replica B relay through B's embedded relay; `usage --json`
// asked on replica A shows B's relay with the measured transfer within 5 %
// (B's own answer is exact; A's comes from what B copies to the store
// every 15 s), next to A's own embedded relay.
func TestRelayUsageOnAnyReplica(t *testing.T) {
	lab, coordA, coordB := newReplicaLab(t)
	ctx := t.Context()
	replica := func(c *meshlab.Coordinator) string {
		id, err := os.ReadFile(filepath.Join(c.StateDir, "replica-id"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(id))
	}
	idA, idB := replica(coordA), replica(coordB)
	a := addSiteAgent(t, lab, coordB, "rusea", natlab.Symmetric)
	b := addSiteAgent(t, lab, coordB, "ruseb", natlab.Symmetric)
	startOnline(t, authKey(t, coordA, true), a, b)
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 40*time.Second); err != nil {
		t.Fatalf("overlay ping before the transfer: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "udp", replicaIP)
	names := []string{a.Name, b.Name}
	before, _ := embeddedUsage(t, coordB, names, idB)
	const count = 1000
	out, err := a.Host.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.002", "-s", strconv.Itoa(usagePingPayload), "-w", "60", ipB)
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	sent, recv := pingCounts(t, out)
	onB, _ := embeddedUsage(t, coordB, names, idB)
	per := relayedPingBytes(usagePingPayload)
	want := map[string]usageVec{a.Name: {recv * per, recv, sent * per, sent}, b.Name: {sent * per, sent, recv * per, recv}}

	// A shows B's relay once B's next flush is in the store: at least
	// what B counted after the ping.
	var onA map[string]usageVec
	start := time.Now()
	for {
		onA, _ = embeddedUsage(t, coordA, names, idB)
		caught := len(onA) == len(names)
		for _, name := range names {
			if onA[name][2] < onB[name][2] || onA[name][0] < onB[name][0] {
				caught = false
			}
		}
		if caught {
			break
		}
		if time.Since(start) > 45*time.Second {
			t.Fatalf("usage on replica A: B's relay %v, B itself says %v", onA, onB)
		}
		time.Sleep(time.Second)
	}
	t.Logf("usage on A showed B's relay in %v", time.Since(start).Round(time.Second))
	what := [4]string{"bytes in", "packets in", "bytes out", "packets out"}
	for _, name := range names {
		got := onA[name].minus(before[name])
		t.Logf("%s on B's relay, asked on A: %v, want %v", name, got, want[name])
		for i, w := range want[name] {
			if diff := float64(got[i]) - float64(w); diff > 0.05*float64(w) || diff < -0.05*float64(w) {
				t.Errorf("%s: %s %d on A, want %d within 5%%", name, what[i], got[i], w)
			}
		}
	}
	if own, _ := embeddedUsage(t, coordA, names, idA); len(own) != len(names) {
		t.Errorf("usage on A lacks rows of its own embedded relay: %v", own)
	}
	table, err := coordA.Admin(ctx, "usage")
	if err != nil || !strings.Contains(table, coordinator.EmbeddedRelay+"@"+idB) {
		t.Errorf("usage table on A: %v\n%s", err, table)
	}
	t.Logf("usage on A:\n%s", table)
}

package loadgen

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSmallRun runs the whole benchmark with a handful of agents against
// a freshly built coordinator, so the load generator itself stays working.
func TestSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the coordinator")
	}
	bin := filepath.Join(t.TempDir(), "meshvpn-coordinator")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go" // where the project's machines have it
	}
	build := exec.Command(gobin, "build", "-o", bin, "github.com/meshvpn/meshvpn/cmd/meshvpn-coordinator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coordinator: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 20
	res, err := Run(ctx, Config{Coordinator: bin, N: n, Workers: 4, ProbeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]Latency{"join": res.Join, "online": res.Online, "offline": res.Offline} {
		if l.Agents != n || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
			t.Errorf("%s: %+v, want all %d agents with ordered quantiles", name, l, n)
		}
	}
	if res.NetmapBytes < 100 || res.RSSBytes <= 0 || res.PeakRSSBytes < res.RSSBytes || res.LostStreams != 0 || len(res.Notes) != 0 {
		t.Errorf("result: %+v", res)
	}
	// The coordinator's own counters saw the agents.
	if got := res.Coordinator[`meshvpn_coordinator_registrations_total{result="created"}`]; got != n+1 {
		t.Errorf("coordinator counted %v registrations, want %d", got, n+1)
	}
	if got := res.Coordinator["meshvpn_coordinator_streams"]; got != n {
		t.Errorf("coordinator has %v streams, want %d", got, n)
	}
}

func TestSummarize(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(100 - i) // 100..1, unsorted
	}
	l := summarize(v)
	if l.Agents != 100 || l.P50 != 50 || l.P99 != 99 || l.Max != 100 {
		t.Fatalf("%+v", l)
	}
	if (summarize(nil) != Latency{}) {
		t.Fatal("empty input")
	}
}

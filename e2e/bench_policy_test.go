package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// benchPolicy has 100 rules, all about the benchmark pair, the last one
// allowing iperf3's port: the filter's per-peer rule list is 100 long.
func benchPolicy() string {
	var sb strings.Builder
	sb.WriteString(`{"acls": [`)
	for i := range 99 {
		fmt.Fprintf(&sb, `{"action": "accept", "src": ["bench-a"], "proto": "tcp", "dst": ["bench-b:%d"]},`, 10000+i)
	}
	sb.WriteString(`{"action": "accept", "src": ["bench-a"], "dst": ["bench-b:5201"]}]}`)
	return sb.String()
}

// filterCost measures iperf3 over the overlay from h to ip with no policy
// and with a 100-rule one, alternating, and returns both medians.
func filterCost(b *testing.B, lab *natlab.Lab, coord *meshlab.Coordinator, h *natlab.Host, ip string, rounds, secs int) (plain, filtered float64) {
	ctx := b.Context()
	path := filepath.Join(lab.Dir, "bench-policy.hujson")
	if err := os.WriteFile(path, []byte(benchPolicy()), 0o600); err != nil {
		b.Fatal(err)
	}
	var plainRuns, filteredRuns []float64
	for range rounds {
		if out, err := coord.Admin(ctx, "policy", "set", path); err != nil {
			b.Fatalf("policy set: %v\n%s", err, out)
		}
		time.Sleep(time.Second) // within 1 s every agent has it
		filteredRuns = append(filteredRuns, iperf(b, h, ip, secs))
		if out, err := coord.Admin(ctx, "policy", "clear"); err != nil {
			b.Fatalf("policy clear: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
		plainRuns = append(plainRuns, iperf(b, h, ip, secs))
	}
	return median(plainRuns), median(filteredRuns)
}

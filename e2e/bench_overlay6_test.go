package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
)

// BenchmarkOverlay6 measures TCP over the IPv6 overlay against the IPv4
// overlay on the same direct tunnel, alternating so that load drift weighs
// on both, and the packet filter's cost on IPv6 (where it walks extension
// headers). Both families share WireGuard and the path: the ratio is about
// the overlay's IPv6 handling, not the underlay.
func BenchmarkOverlay6(b *testing.B) {
	lab, coord := newLab(b)
	ctx := b.Context()
	key := authKey(b, coord, true)
	var ag [2]*meshlab.Agent
	for i, name := range []string{"bench-a", "bench-b"} {
		h, err := lab.AddPublicHost(name, fmt.Sprintf("203.0.113.%d", 21+i))
		if err != nil {
			b.Fatal(err)
		}
		hostIPv6On(b, h)
		if ag[i], err = meshlab.NewAgent(coord, h, name); err != nil {
			b.Fatal(err)
		}
		if err := ag[i].Up(ctx, key, 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, ag[:], 60*time.Second); err != nil {
		b.Fatal(err)
	}
	ip4, ip6 := overlayIP(b, ag[1]), overlayIP6(b, ag[1]).String()
	path := benchDirectPath(b, ag[0], "bench-b", "203.0.113.22:", 10*time.Second)
	server, err := ag[1].Host.Start("iperf3", "-s", "--forceflush")
	if err != nil {
		b.Fatal(err)
	}
	if err := server.WaitLog("Server listening", 10*time.Second); err != nil {
		b.Fatal(err)
	}
	if out, err := pingUntil(ctx, ag[0], ip6, 10*time.Second); err != nil {
		b.Fatalf("ping %s: %v\n%s", ip6, err, out)
	}
	const rounds, secs = 3, 5
	var runs4, runs6 []float64
	for range rounds {
		runs4 = append(runs4, iperf(b, ag[0].Host, ip4, secs))
		runs6 = append(runs6, iperf(b, ag[0].Host, ip6, secs))
	}
	v4, v6 := median(runs4), median(runs6)
	plain, filtered := filterCost(b, lab, coord, ag[0].Host, ip6, rounds, secs)
	benchDirectPath(b, ag[0], "bench-b", "203.0.113.22:", 0)

	b.ReportMetric(v6/v4, "ipv6/ipv4")
	b.ReportMetric(filtered/plain, "policy6-ratio")
	summary := fmt.Sprintf(`
============ meshvpn IPv6 overlay benchmark ============
link: two public lab hosts on one bridge, IPv4 underlay
path:                          %s
iperf3 TCP over IPv4 overlay:  %6.2f Gbit/s  (median of %d x %d s: %s)
iperf3 TCP over IPv6 overlay:  %6.2f Gbit/s  (median of %d x %d s: %s)
ratio IPv6/IPv4:               %6.2f
IPv6 with a 100-rule policy:   %6.2f Gbit/s vs %.2f without (median of %d each, alternating)
ratio policy/no policy (IPv6): %6.2f
========================================================
`, path, v4/1e9, rounds, secs, gbits(runs4), v6/1e9, rounds, secs, gbits(runs6), v6/v4,
		filtered/1e9, plain/1e9, rounds, filtered/plain)
	fmt.Print(summary)
	os.WriteFile(filepath.Join(lab.Dir, "summary-overlay6.txt"), []byte(summary), 0o644)
}

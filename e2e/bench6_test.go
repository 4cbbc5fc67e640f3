package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// BenchmarkTunnelIPv6 is BenchmarkTunnel over an IPv6 underlay: two
// dual-stack public hosts, meshvpn direct between their IPv6 addresses
// against stock wireguard-go with IPv6 endpoints, alternating on the same
// link. IPv4 UDP between the two hosts is dropped (their nftables), so
// the direct path cannot be IPv4: with two public hosts both families are
// host pairs and either may win (agent/ice6.go). It reports, it does not
// judge, but fails when the meshvpn path is not direct over IPv6.
func BenchmarkTunnelIPv6(b *testing.B) {
	lab, coord := newIPv6Lab(b)
	ctx := b.Context()
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatal("iperf3 missing: apt-get install iperf3")
	}
	wgstock := buildWGStock(b, lab.Dir)
	hostA, err := lab.AddPublicHost("bench6-a", "203.0.113.23")
	if err != nil {
		b.Fatal(err)
	}
	hostB, err := lab.AddPublicHost("bench6-b", "203.0.113.24")
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range []struct {
		h     *natlab.Host
		other netip.Addr
	}{{hostA, hostB.IP}, {hostB, hostA.IP}} {
		rules := fmt.Sprintf("table ip nov4 {\n chain out {\n type filter hook output priority 0;\n ip daddr %s meta l4proto udp drop\n }\n}\n", w.other)
		if out, err := w.h.Run(ctx, "sh", "-c", "nft -f - <<'EOF'\n"+rules+"EOF\n"); err != nil {
			b.Fatalf("drop IPv4 UDP on %s: %v\n%s", w.h.Name, err, out)
		}
	}
	key := authKey(b, coord, true)
	var agents []*meshlab.Agent
	for _, h := range []*natlab.Host{hostA, hostB} {
		a, err := meshlab.NewAgent(coord, h, h.Name)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		agents = append(agents, a)
	}
	a, peer := agents[0], agents[1]
	var ipB string
	err = natlab.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		p := st.Peer(peer.Name)
		if p == nil || p.IP == "" {
			return fmt.Errorf("%s does not know %s yet", a.Name, peer.Name)
		}
		ipB = p.IP
		_, err = a.Host.Run(ctx, "ping", "-n", "-c", "1", "-W", "0.5", ipB)
		return err
	})
	if err != nil {
		b.Fatalf("no overlay ping reply: %v", err)
	}
	prefix := "[" + hostB.IP6.String() + "]:"
	path := benchDirectPath(b, a, peer.Name, prefix, 20*time.Second)

	server, err := hostB.Start("iperf3", "-s", "--forceflush")
	if err != nil {
		b.Fatal(err)
	}
	if err := server.WaitLog("Server listening", 10*time.Second); err != nil {
		b.Fatal(err)
	}
	startStockPair(b, wgstock, hostA, hostB, netip.AddrPortFrom(hostA.IP6, 51820).String(), netip.AddrPortFrom(hostB.IP6, 51820).String())
	const rounds, secs = 3, 5
	var meshRuns, stockRuns []float64
	for i := 0; i < rounds; i++ {
		meshRuns = append(meshRuns, iperf(b, hostA, ipB, secs))
		stockRuns = append(stockRuns, iperf(b, hostA, "10.99.0.2", secs))
	}
	benchDirectPath(b, a, peer.Name, prefix, 0)
	mesh, stock := median(meshRuns), median(stockRuns)
	raw := iperf(b, hostA, hostB.IP6.String(), secs)

	b.ReportMetric(mesh/1e9, "meshvpn6-Gbit/s")
	b.ReportMetric(stock/1e9, "stock6-Gbit/s")
	b.ReportMetric(mesh/stock, "ratio6")
	summary := fmt.Sprintf(`
============ meshvpn benchmark, IPv6 underlay ============
link: two dual-stack public lab hosts on one bridge (veth), IPv4 UDP between them dropped
meshvpn path:             %s
iperf3 TCP over meshvpn:  %6.2f Gbit/s  (median of %d x %d s: %s)
iperf3 TCP over stock wg: %6.2f Gbit/s  (median of %d x %d s: %s; wireguard-go StdNetBind, IPv6 endpoints)
ratio meshvpn/stock:      %6.2f        (target >= 0.90)
raw IPv6 link, no tunnel: %6.2f Gbit/s  (%d s, for scale)
==========================================================
`, path, mesh/1e9, rounds, secs, gbits(meshRuns), stock/1e9, rounds, secs, gbits(stockRuns), mesh/stock, raw/1e9, secs)
	fmt.Print(summary)
	os.WriteFile(filepath.Join(lab.Dir, "summary6.txt"), []byte(summary), 0o644)
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// BenchmarkRelay compares a path relayed through the coordinator's
// embedded TURN server (two symmetric-NAT sites) with a direct path (two
// full-cone sites) in the same lab and run: iperf3 TCP throughput, as a
// ratio, and the round trip each adds. Runs alternate so machine noise
// weighs on both alike.
func BenchmarkRelay(b *testing.B) {
	lab, coord := newLab(b)
	benchRelayPath(b, lab, coord, "the embedded TURN server")
}

// BenchmarkRelayPeer is BenchmarkRelay through a member's peer relay
// (meshvpn up --relay-server on a public host), the mesh's only relay.
func BenchmarkRelayPeer(b *testing.B) {
	lab, coord, _, _ := newPeerRelayLab(b)
	benchRelayPath(b, lab, coord, "a peer relay (meshvpn up --relay-server)")
}

// BenchmarkRelayCoturn is BenchmarkRelay through coturn (use-auth-secret),
// the mesh's only relay.
func BenchmarkRelayCoturn(b *testing.B) {
	lab, coord := newLabWith(b, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		turn, err := meshlab.StartCoturn(ctx, lab)
		if err != nil {
			return nil, err
		}
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: turn.CoordinatorArgs()})
	})
	benchRelayPath(b, lab, coord, "coturn")
}

// benchRelayPath measures a relayed pair against a direct pair in lab;
// relay names the relay the mesh has.
func benchRelayPath(b *testing.B, lab *natlab.Lab, coord *meshlab.Coordinator, relayName string) {
	ctx := b.Context()
	key := authKey(b, coord, true)
	pairs := map[string][2]*meshlab.Agent{}
	for _, pc := range []struct {
		name string
		kind natlab.Kind
	}{{"direct", natlab.FullCone}, {"relay", natlab.Symmetric}} {
		var p [2]*meshlab.Agent
		for i := range p {
			p[i] = addSiteAgent(b, lab, coord, fmt.Sprintf("%s%d", pc.name, i+1), pc.kind)
			if err := p[i].Up(ctx, key, 30*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		pairs[pc.name] = p
	}
	ips := map[string]string{}
	for name, p := range pairs {
		ip := overlayIP(b, p[1])
		ips[name] = ip
		if out, err := pingUntil(ctx, p[0], ip, 40*time.Second); err != nil {
			b.Fatalf("%s pair: no overlay ping: %v\n%s", name, err, out)
		}
		if _, err := meshlab.WaitPath(ctx, p[0], p[1].Name, name, 30*time.Second); err != nil {
			b.Fatalf("%s pair: %v", name, err)
		}
		srv, err := p[1].Host.Start("iperf3", "-s", "--forceflush")
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.WaitLog("Server listening", 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	const rounds, secs = 3, 5
	runs := map[string][]float64{}
	for i := 0; i < rounds; i++ {
		for _, name := range []string{"direct", "relay"} {
			runs[name] = append(runs[name], iperf(b, pairs[name][0].Host, ips[name], secs))
		}
	}
	rtt := map[string]float64{}
	for _, name := range []string{"direct", "relay"} {
		out, err := pairs[name][0].Host.Run(ctx, "ping", "-n", "-q", "-c", "50", "-i", "0.02", ips[name])
		if err != nil {
			b.Fatalf("%s ping: %v\n%s", name, err, out)
		}
		rtt[name] = avgRTT(b, out)
	}
	direct, relay := median(runs["direct"]), median(runs["relay"])
	b.ReportMetric(relay/1e9, "relay-Gbit/s")
	b.ReportMetric(direct/1e9, "direct-Gbit/s")
	b.ReportMetric(relay/direct, "relay/direct")
	b.ReportMetric(rtt["relay"]-rtt["direct"], "added-rtt-ms")
	st, _ := pairs["relay"][0].Status(ctx)
	via := "?"
	if st != nil {
		if p := st.Peer(pairs["relay"][1].Name); p != nil && p.Relay != nil {
			via = p.Relay.Server + " over " + p.Relay.Transport
		}
	}
	summary := fmt.Sprintf(`
================ meshvpn relay benchmark ================
relayed pair: two symmetric-NAT sites, through %s (%s)
direct pair:  two full-cone sites
iperf3 TCP relayed: %6.2f Gbit/s  (median of %d x %d s: %s)
iperf3 TCP direct:  %6.2f Gbit/s  (median of %d x %d s: %s)
ratio relayed/direct: %5.2f
overlay RTT relayed: %.3f ms, direct: %.3f ms, added by the relay: %.3f ms (ping, 50 x 20 ms)
=========================================================
`, relayName, via, relay/1e9, rounds, secs, gbits(runs["relay"]), direct/1e9, rounds, secs, gbits(runs["direct"]),
		relay/direct, rtt["relay"], rtt["direct"], rtt["relay"]-rtt["direct"])
	fmt.Print(summary)
	os.WriteFile(filepath.Join(lab.Dir, "relay-summary.txt"), []byte(summary), 0o644)
}

var rttLine = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// avgRTT reads the average from ping's "rtt min/avg/max/mdev" line.
func avgRTT(b *testing.B, out string) float64 {
	m := rttLine.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no rtt line in ping output:\n%s", out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

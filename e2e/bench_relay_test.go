package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
	benchRelayPath(b, lab, coord, "the embedded TURN server", coord.Proc, natlab.Symmetric)
}

// BenchmarkRelayTCP is BenchmarkRelay for two sites that block UDP: both
// reach the embedded relay over TCP (the shared relay client over a
// stream), against the direct pair in the same run.
func BenchmarkRelayTCP(b *testing.B) {
	lab, coord := newLab(b)
	benchRelayPath(b, lab, coord, "the embedded TURN server", coord.Proc, natlab.UDPBlocked)
}

// BenchmarkRelayCoturnTCP is BenchmarkRelayTCP through coturn.
func BenchmarkRelayCoturnTCP(b *testing.B) {
	lab, coord, turn := newCoturnLab(b)
	benchRelayPath(b, lab, coord, "coturn", turn.Proc, natlab.UDPBlocked)
}

// BenchmarkRelayPeer is BenchmarkRelay through a member's peer relay
// (meshvpn up --relay-server on a public host), the mesh's only relay.
func BenchmarkRelayPeer(b *testing.B) {
	lab, coord, rel, _ := newPeerRelayLab(b)
	benchRelayPath(b, lab, coord, "a peer relay (meshvpn up --relay-server)", rel.Proc, natlab.Symmetric)
}

// BenchmarkRelayCoturn is BenchmarkRelay through coturn (use-auth-secret),
// the mesh's only relay.
func BenchmarkRelayCoturn(b *testing.B) {
	lab, coord, turn := newCoturnLab(b)
	benchRelayPath(b, lab, coord, "coturn", turn.Proc, natlab.Symmetric)
}

// newCoturnLab is a lab whose only relay is coturn.
func newCoturnLab(b *testing.B) (*natlab.Lab, *meshlab.Coordinator, *meshlab.Coturn) {
	var turn *meshlab.Coturn
	lab, coord := newLabWith(b, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		var err error
		if turn, err = meshlab.StartCoturn(ctx, lab); err != nil {
			return nil, err
		}
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: turn.CoordinatorArgs()})
	})
	return lab, coord, turn
}

// benchRelayPath measures a relayed pair against a direct pair in lab;
// relayName names the relay the mesh has, relayProc is its process (for
// the CPU it spends per Gbit/s relayed); relayKind is the relayed pair's
// sites (symmetric NATs relay over UDP, UDP-blocked sites over TCP).
func benchRelayPath(b *testing.B, lab *natlab.Lab, coord *meshlab.Coordinator, relayName string, relayProc *natlab.Proc, relayKind natlab.Kind) {
	ctx := b.Context()
	key := authKey(b, coord, true)
	pairs := map[string][2]*meshlab.Agent{}
	for _, pc := range []struct {
		name string
		kind natlab.Kind
	}{{"direct", natlab.FullCone}, {"relay", relayKind}} {
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
	var coresPerGbit []float64
	for i := 0; i < rounds; i++ {
		for _, name := range []string{"direct", "relay"} {
			cpu0 := procCPU(relayProc)
			start := time.Now()
			rate := iperf(b, pairs[name][0].Host, ips[name], secs)
			runs[name] = append(runs[name], rate)
			if name == "relay" && rate > 0 {
				cores := (procCPU(relayProc) - cpu0).Seconds() / time.Since(start).Seconds()
				coresPerGbit = append(coresPerGbit, cores/(rate/1e9))
			}
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
	b.ReportMetric(median(coresPerGbit), "relay-cores-per-Gbit/s")
	st, _ := pairs["relay"][0].Status(ctx)
	via := "?"
	if st != nil {
		if p := st.Peer(pairs["relay"][1].Name); p != nil && p.Relay != nil {
			via = p.Relay.Server + " over " + p.Relay.Transport
		}
	}
	summary := fmt.Sprintf(`
================ meshvpn relay benchmark ================
relayed pair: two %s sites, through %s (%s)
direct pair:  two full-cone sites
iperf3 TCP relayed: %6.2f Gbit/s  (median of %d x %d s: %s)
iperf3 TCP direct:  %6.2f Gbit/s  (median of %d x %d s: %s)
ratio relayed/direct: %5.2f
relay CPU: %.2f cores per Gbit/s relayed (median; the relay's process, user+system)
overlay RTT relayed: %.3f ms, direct: %.3f ms, added by the relay: %.3f ms (ping, 50 x 20 ms)
=========================================================
`, relayKind, relayName, via, relay/1e9, rounds, secs, gbits(runs["relay"]), direct/1e9, rounds, secs, gbits(runs["direct"]),
		relay/direct, median(coresPerGbit), rtt["relay"], rtt["direct"], rtt["relay"]-rtt["direct"])
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

// procCPU is the CPU time p has used (user and system), 0 when unknown.
func procCPU(p *natlab.Proc) time.Duration {
	if p == nil || p.Cmd == nil || p.Cmd.Process == nil {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces, in parens):
	// utime and stime are the 14th and 15th of the line, in clock ticks
	// of 1/100 s (USER_HZ).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// meshBenchWindow bounds the wait for every pinged pair to go direct,
// from the moment the agents are started.
const meshBenchWindow = 120 * time.Second

// meshBenchSettle is how long the mesh runs on, by default, after every
// pinged pair is direct (or the window ran out) before RSS, sockets and log
// lines are read, so that they show a mesh at rest rather than mid-burst.
// BENCH_MESH_SETTLE changes it.
const meshBenchSettle = 10 * time.Second

// meshBenchAllPairsMax is the largest mesh in which every pair is pinged;
// bigger meshes ping a fixed sample (meshBenchSample).
const meshBenchAllPairsMax = 20

// coordMetricsAddr is where the benchmark's coordinator serves /metrics,
// on its namespace's loopback.
const coordMetricsAddr = "127.0.0.1:9100"

// streamCloseLines are the coordinator's log messages for a stream it
// closes itself (coordinator/hub.go, coordinator/stream.go). lograte may
// fold repeats into "similar lines suppressed", so the dropped-streams
// counter from /metrics is reported next to them.
var streamCloseLines = []string{
	"stream send queue full, closing",
	"stream not answering pings, closing",
	"stream refused",
}

// meshBenchResult is what one make bench-mesh run measured.
type meshBenchResult struct {
	n          int
	nat        string
	pairs      int    // pairs pinged
	pairsNote  string // which pairs
	allDirect  time.Duration
	directOK   int // pinged pairs direct both ways by the end of the window
	directMed  time.Duration
	lastDirect time.Duration // when the last pinged pair that went direct did
	stuck      []string      // agents whose last status calls got no answer
	// missedCalls status calls timed out, on missedAgents agents.
	missedCalls, missedAgents int
	pingOK                    int
	running                   int
	rssKiB                    []int64
	lines                     []int
	warnLines                 []int
	coordSocks                int
	closes                    map[string]int
	dropped                   float64 // meshvpn_coordinator_streams_dropped_total; -1 when unread
	measuredAt                time.Duration
	settle                    time.Duration
	neigh                     string
	lazy                      string // --lazy-peers; "" for the agent's default (auto)
}

// BenchmarkMesh (make bench-mesh N=20) starts N real agents at once, each
// on its own public lab host (BENCH_MESH_NAT=kind puts each behind its own
// NAT of that kind instead), pings a fixed set of pairs over the overlay
// and reports: the time until every pinged pair is direct both ways,
// agent RSS, the coordinator's sockets, log lines per agent and streams
// the coordinator closed. It prints a markdown table and writes it to
// $BENCH_MESH_OUT. BENCH_MESH_SETTLE (default 10s) is how long after that
// point the per-agent figures are read. It fails only when the lab cannot
// be built or the agents do not start, never on the numbers. It runs only
// when BENCH_MESH_N is set, so that make bench stays short.
func BenchmarkMesh(b *testing.B) {
	if os.Getenv("BENCH_MESH_N") == "" {
		b.Skip("BENCH_MESH_N not set (make bench-mesh N=20)")
	}
	n, err := strconv.Atoi(os.Getenv("BENCH_MESH_N"))
	if err != nil || n < 2 || n > 150 {
		b.Fatalf("BENCH_MESH_N=%q: want a count 2-150", os.Getenv("BENCH_MESH_N"))
	}
	natName := os.Getenv("BENCH_MESH_NAT")
	if natName == "" {
		natName = natlab.None.String()
	}
	kind, err := natlab.ParseKind(natName)
	if err != nil {
		b.Fatal(err)
	}
	if kind != natlab.None && n > 49 {
		b.Fatalf("BENCH_MESH_NAT=%s: a lab holds at most 49 NAT sites, N=%d", natName, n)
	}
	// A bench asked for by name must not pass with no table.
	if err := natlab.Check(); err != nil {
		b.Fatalf("natlab: %v (run as root: sudo make bench-mesh)", err)
	}
	res := &meshBenchResult{n: n, nat: natName, closes: map[string]int{}, dropped: -1, settle: meshBenchSettle, lazy: os.Getenv("BENCH_MESH_LAZY")}
	if v := os.Getenv("BENCH_MESH_SETTLE"); v != "" {
		if res.settle, err = time.ParseDuration(v); err != nil || res.settle < 0 || res.settle > time.Hour {
			b.Fatalf("BENCH_MESH_SETTLE=%q: want a duration 0-1h", v)
		}
	}
	res.neigh = raiseNeighLimits(b, n)
	runMeshBench(b, res, kind)
	table := meshBenchTable(res)
	fmt.Println(table)
	if out := os.Getenv("BENCH_MESH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatalf("write %s: %v", out, err)
		}
		b.Logf("table written to %s", out)
	}
}

// runMeshBench builds the lab, starts the agents together and fills res.
func runMeshBench(b testing.TB, res *meshBenchResult, kind natlab.Kind) {
	// Room for one relay allocation per agent per peer (issue 16), and
	// /metrics for the dropped-streams counter.
	lab, coord := newLabWith(b, meshlab.StartCoordinatorArgs(
		"--relay-range", "30000-59999", "--metrics-listen", coordMetricsAddr))
	key := authKey(b, coord, true)
	agents := make([]*meshlab.Agent, res.n)
	for i := range agents {
		name := fmt.Sprintf("m%02d", i+1)
		var h *natlab.Host
		var err error
		if kind == natlab.None {
			h, err = lab.AddPublicHost(name, meshBenchIP(i))
		} else {
			var s *natlab.Site
			if s, err = lab.AddSite(name, kind); err == nil {
				h = s.Host
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		if agents[i], err = meshlab.NewAgent(coord, h, name); err != nil {
			b.Fatal(err)
		}
		if res.lazy != "" {
			agents[i].ExtraArgs = append(agents[i].ExtraArgs, "--lazy-peers", res.lazy)
		}
	}
	pairs, note := meshBenchSample(agents)
	res.pairs, res.pairsNote = len(pairs), note

	start := time.Now()
	for _, a := range agents {
		if err := a.Start(key); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(b.Context(), meshBenchWindow)
	defer cancel()
	poll := newMeshPoller(agents)
	ips := poll.overlayIPs(ctx)
	b.Logf("%d of %d agents have overlay addresses after %v", len(ips), res.n, time.Since(start).Round(time.Millisecond))

	// Pings make the traffic that asks for a path; status shows when it
	// is direct. Both run until every pinged pair is direct or the window
	// ends.
	pinged := make([]bool, len(pairs))
	pingsDone := make(chan struct{})
	go func() {
		defer close(pingsDone)
		pingSample(ctx, pairs, ips, pinged)
	}()
	directAt := make([]time.Duration, len(pairs))
	for ctx.Err() == nil {
		poll.observe(ctx, pairs)
		left := 0
		for i, p := range pairs {
			if directAt[i] == 0 && p.ab != nil && p.ba != nil && p.ab.Path == "direct" && p.ba.Path == "direct" {
				directAt[i] = time.Since(start)
			}
			if directAt[i] == 0 {
				left++
			}
		}
		// Done when every pair has been pinged and is direct (eager
		// agents may go direct before the ping asks them to).
		select {
		case <-pingsDone:
			if left == 0 {
				res.allDirect = slices.Max(directAt)
			}
		default:
		}
		if res.allDirect > 0 {
			break
		}
		time.Sleep(time.Second)
	}
	cancel()
	<-pingsDone
	var ds []time.Duration
	for i := range pairs {
		if pinged[i] {
			res.pingOK++
		}
		if directAt[i] > 0 {
			ds = append(ds, directAt[i])
		}
	}
	res.directOK = len(ds)
	if len(ds) > 0 {
		slices.Sort(ds)
		res.directMed, res.lastDirect = ds[len(ds)/2], ds[len(ds)-1]
	}
	b.Logf("%d of %d pinged pairs direct, all after %v", res.directOK, len(pairs), res.allDirect)

	time.Sleep(res.settle)
	res.measuredAt = time.Since(start)
	meshBenchMeasure(b, res, coord, agents)
	res.stuck = poll.stuckNames()
	res.missedCalls, res.missedAgents = poll.missed()
	dumpStuck(b, poll)
}

// meshBenchIP is the public address of the i-th agent: 203.0.113.11-99,
// then 198.51.100.11-99 (.10 of both is the coordinator's).
func meshBenchIP(i int) string {
	if i < 89 {
		return fmt.Sprintf("203.0.113.%d", 11+i)
	}
	return fmt.Sprintf("198.51.100.%d", 11+i-89)
}

// meshBenchSample returns the pairs to ping: all of them up to
// meshBenchAllPairsMax agents, otherwise each agent with the next, the one
// after it and the one half way round the ring (a fixed sample, about 2.5
// pairs per agent, that every agent is in), and a note saying which.
func meshBenchSample(agents []*meshlab.Agent) ([]*meshPair, string) {
	n := len(agents)
	var pairs []*meshPair
	if n <= meshBenchAllPairsMax {
		for i, a := range agents {
			for _, c := range agents[i+1:] {
				pairs = append(pairs, &meshPair{a: a, b: c, want: "direct"})
			}
		}
		return pairs, fmt.Sprintf("all %d pairs", len(pairs))
	}
	seen := map[[2]int]bool{}
	for i := range agents {
		for _, step := range []int{1, 2, n / 2} {
			j := (i + step) % n
			k := [2]int{min(i, j), max(i, j)}
			if i == j || seen[k] {
				continue
			}
			seen[k] = true
			pairs = append(pairs, &meshPair{a: agents[k[0]], b: agents[k[1]], want: "direct"})
		}
	}
	return pairs, fmt.Sprintf("a fixed sample of %d of %d pairs (each agent with the next, the one after and the one opposite on a ring)", len(pairs), n*(n-1)/2)
}

// pingSample pings each pair (one echo at a time, a few pairs at once)
// until it answers once or ctx ends, and marks the pairs that answered.
func pingSample(ctx context.Context, pairs []*meshPair, ips map[*meshlab.Agent]string, ok []bool) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range pairs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if ips[p.a] == "" || ips[p.b] == "" {
			<-sem
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			for ctx.Err() == nil {
				if _, err := p.a.Host.Run(ctx, "ping", "-n", "-c", "1", "-W", "1", ips[p.b]); err == nil {
					ok[i] = true
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// activeBenchWindow bounds each phase of make bench-mesh-active: the
// peers getting their addresses, the hub seeing them online, and every
// path going direct.
const activeBenchWindow = 3 * time.Minute

// activeResult is what one make bench-mesh-active run measured.
type activeResult struct {
	n                int
	settle, window   time.Duration
	peersUp, hubUp   time.Duration // from the peers' start; from the hub's
	pinged           int           // peers that answered a ping before the idle window
	allDirect        time.Duration // from the hub's start; 0 when not reached
	direct, relay    int           // the hub's paths at the measure
	seenDirect       int           // peers whose status shows the hub direct
	pingedAfter      int           // peers that answered a ping after the idle window
	directAfter      int           // the hub's direct paths after the idle window
	hub, peer        procWindow
	peerName         string
	load0, load1     string // /proc/loadavg at the window's start and end
	goroutines, heap float64
	neigh            string
}

// BenchmarkMeshActive (make bench-mesh-active N=100) measures one real
// agent, the hub, with N working tunnels to N real peer agents, each on
// its own public lab host. The hub runs --lazy-peers off: every peer gets
// its ICE sessions, WireGuard peer and direct path at once. The peers run
// the default (auto: lazy above 32 peers), so each sets up only the path
// the hub asks it for. The hub pings every peer over the overlay, all its
// paths must show direct, then the tunnels sit idle: after a settle
// (BENCH_MESH_ACTIVE_SETTLE, 30s) the hub's RSS (VmRSS, VmHWM), CPU
// (utime+stime, percent of one core) and log lines are read over a window
// (BENCH_MESH_ACTIVE_WINDOW, 1m), with one peer agent measured alongside
// for comparison. Then it pings every peer once more. It prints a
// markdown table and writes it to $BENCH_MESH_ACTIVE_OUT; it fails only
// when the lab cannot be built or the agents do not start, never on the
// numbers.
func BenchmarkMeshActive(b *testing.B) {
	if os.Getenv("BENCH_MESH_ACTIVE_N") == "" {
		b.Skip("BENCH_MESH_ACTIVE_N not set (make bench-mesh-active N=100)")
	}
	res := &activeResult{}
	var err error
	if res.n, err = strconv.Atoi(os.Getenv("BENCH_MESH_ACTIVE_N")); err != nil || res.n < 1 || res.n > 150 {
		b.Fatalf("BENCH_MESH_ACTIVE_N=%q: want a count 1-150", os.Getenv("BENCH_MESH_ACTIVE_N"))
	}
	res.settle = envDuration(b, "BENCH_MESH_ACTIVE_SETTLE", 30*time.Second)
	res.window = envDuration(b, "BENCH_MESH_ACTIVE_WINDOW", time.Minute)
	if err := natlab.Check(); err != nil {
		b.Fatalf("natlab: %v (run as root: sudo make bench-mesh-active)", err)
	}
	res.neigh = raiseNeighLimits(b, res.n+1)
	runActiveBench(b, res)
	table := activeTable(res)
	fmt.Println(table)
	if out := os.Getenv("BENCH_MESH_ACTIVE_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatalf("write %s: %v", out, err)
		}
		b.Logf("table written to %s", out)
	}
}

func runActiveBench(b *testing.B, res *activeResult) {
	lab, coord := newLabWith(b, meshlab.StartCoordinatorArgs(
		"--relay-range", "30000-59999", "--metrics-listen", coordMetricsAddr))
	key := authKey(b, coord, true)
	hh, err := lab.AddPublicHost("hub", meshBenchIP(0))
	if err != nil {
		b.Fatal(err)
	}
	hub, err := meshlab.NewAgent(coord, hh, "hub")
	if err != nil {
		b.Fatal(err)
	}
	hub.ExtraArgs = []string{"--lazy-peers", "off", "--metrics-listen", hubMetricsAddr}
	peers := make([]*meshlab.Agent, res.n)
	for i := range peers {
		name := fmt.Sprintf("p%03d", i+1)
		h, err := lab.AddPublicHost(name, meshBenchIP(i+1))
		if err != nil {
			b.Fatal(err)
		}
		if peers[i], err = meshlab.NewAgent(coord, h, name); err != nil {
			b.Fatal(err)
		}
	}

	// The peers first, so that the hub's figures are those of one agent
	// joining a mesh of N, not of N+1 agents starting together.
	start := time.Now()
	for _, a := range peers {
		if err := a.Start(key); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(b.Context(), activeBenchWindow)
	ips := newMeshPoller(peers).overlayIPs(ctx)
	cancel()
	if len(ips) < res.n {
		b.Fatalf("only %d of %d peers have an overlay address after %v", len(ips), res.n, time.Since(start).Round(time.Second))
	}
	res.peersUp = time.Since(start)
	b.Logf("%d peers have overlay addresses after %v", res.n, res.peersUp.Round(time.Millisecond))

	start = time.Now()
	if err := hub.Start(key); err != nil {
		b.Fatal(err)
	}
	if err := meshlab.WaitAll(b.Context(), []*meshlab.Agent{hub}, activeBenchWindow, func(_ *meshlab.Agent, st *meshlab.Status) error {
		if n := st.OnlinePeers(); n < res.n {
			return fmt.Errorf("%d of %d peers online", n, res.n)
		}
		return nil
	}); err != nil {
		b.Fatalf("hub never saw its peers: %v\n%s", err, tailLines(hub.Proc.Log(), 20))
	}
	res.hubUp = time.Since(start)
	ips[hub] = overlayIP(b, hub)
	b.Logf("hub sees %d online peers after %v", res.n, res.hubUp.Round(time.Millisecond))

	ctx, cancel = context.WithTimeout(b.Context(), activeBenchWindow)
	res.pinged = pingPeers(ctx, hub, peers, ips)
	res.allDirect, res.direct, res.relay = waitHubDirect(ctx, b, hub, res.n, start)
	cancel()
	b.Logf("%d of %d peers answered, %d direct and %d relayed at the hub after %v", res.pinged, res.n, res.direct, res.relay, time.Since(start).Round(time.Millisecond))
	res.seenDirect = peersSeeDirect(b, peers, hub.Name)

	time.Sleep(res.settle)
	mid := peers[len(peers)/2]
	res.peerName = mid.Name
	res.load0 = loadAvg()
	ws := measureProcs(b, []*meshlab.Agent{hub, mid}, res.window, nil)
	res.load1 = loadAvg()
	res.hub, res.peer = ws[0], ws[1]
	if m, err := scrapeAgent(b.Context(), hub, hubMetricsAddr); err == nil {
		res.goroutines, res.heap = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	} else {
		b.Logf("hub /metrics: %v", err)
	}

	// The tunnels are still there after the idle window.
	ctx, cancel = context.WithTimeout(b.Context(), activeBenchWindow)
	res.pingedAfter = pingPeers(ctx, hub, peers, ips)
	cancel()
	if st, err := hub.Status(b.Context()); err == nil {
		for _, p := range st.Peers {
			if p.Path == "direct" {
				res.directAfter++
			}
		}
	}
	b.Logf("top lines of the hub:\n%s", tailLines(hub.Proc.Log(), 15))
	b.Logf("path changes of %s (the measured peer):\n%s", mid.Name, pathChanges(mid.Proc.Log()))
}

// pathChanges are a log's lines about paths lost and found.
func pathChanges(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "path lost") || strings.Contains(l, "path found") || strings.Contains(l, "no working path") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// hubMetricsAddr is where the hub serves /metrics, on its namespace's
// loopback.
const hubMetricsAddr = "127.0.0.1:9101"

// pingPeers pings every peer from a over the overlay (pingSample: one
// echo at a time, eight peers at once) until it answers once or ctx ends,
// and returns how many answered. ips must hold a's address too.
func pingPeers(ctx context.Context, a *meshlab.Agent, peers []*meshlab.Agent, ips map[*meshlab.Agent]string) int {
	pairs := make([]*meshPair, len(peers))
	for i, p := range peers {
		pairs[i] = &meshPair{a: a, b: p}
	}
	ok := make([]bool, len(pairs))
	pingSample(ctx, pairs, ips, ok)
	n := 0
	for _, v := range ok {
		if v {
			n++
		}
	}
	return n
}

// waitHubDirect polls the hub's status until all n peers are direct or ctx
// ends; it returns when they were all direct (since start; 0 if never)
// and the last counts of direct and relayed paths.
func waitHubDirect(ctx context.Context, b *testing.B, hub *meshlab.Agent, n int, start time.Time) (time.Duration, int, int) {
	var direct, relay int
	for ctx.Err() == nil {
		st, err := hub.Status(ctx)
		if err != nil {
			b.Logf("hub status: %v", err)
		} else {
			direct, relay = 0, 0
			for _, p := range st.Peers {
				switch p.Path {
				case "direct":
					direct++
				case "relay":
					relay++
				}
			}
			if direct == n {
				return time.Since(start), direct, relay
			}
		}
		time.Sleep(time.Second)
	}
	return 0, direct, relay
}

// peersSeeDirect counts the peers whose own status shows a direct path to
// the peer called name (eight status calls at a time).
func peersSeeDirect(b *testing.B, peers []*meshlab.Agent, name string) int {
	var n atomic.Int64
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, p := range peers {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, err := p.Status(b.Context())
			if err != nil {
				b.Logf("%s status: %v", p.Name, err)
				return
			}
			if ps := st.Peer(name); ps != nil && ps.Path == "direct" {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

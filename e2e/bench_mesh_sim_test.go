package e2e

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/loadgen"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// simBenchIP is the lab host the simulated nodes dial from; simAgentIP
// the real agent's.
const (
	simBenchIP = "203.0.113.200"
	simAgentIP = "203.0.113.11"
)

// meshSimResult is what one make bench-mesh-sim run measured.
type meshSimResult struct {
	n, wake                int
	lazy                   string
	joinTook, peersTook    time.Duration
	settle, window, wakeW  time.Duration
	idle, woken            procWindow
	awakeAfter, wokeDirect int // peers not idle after the wakes; of those, with a path
	wakeLines              []string
	lost                   int64
	dropped                float64
}

// procWindow is one process measured over a window.
type procWindow struct {
	rssKiB, rssMaxKiB int64
	hwmKiB            int64   // VmHWM at the end: the peak over the process's life
	cpuPct            float64 // of one core
	lines             int     // log lines written in the window
	perHour           float64
	top               []string // most frequent lines in the window, with counts
}

// BenchmarkMeshSim (make bench-mesh-sim SIM=1000) measures one real agent
// in a mesh with SIM simulated nodes (internal/loadgen: registered, online,
// holding streams, but with no TUN and no ICE, so they never answer a
// session). The agent is measured idle (every peer asleep: paths on
// demand) over BENCH_MESH_SIM_WINDOW, then again after `status --peer`
// wakes BENCH_MESH_SIM_WAKE of them: their sessions get no answer and end
// without a path, so that figure is the cost of sessions in flight, not of
// working tunnels. It reports RSS, CPU (percent of one core), log lines
// (and per hour) and the coordinator's dropped streams. It never fails on
// numbers.
func BenchmarkMeshSim(b *testing.B) {
	if os.Getenv("BENCH_MESH_SIM_N") == "" {
		b.Skip("BENCH_MESH_SIM_N not set (make bench-mesh-sim SIM=1000)")
	}
	res := &meshSimResult{lazy: os.Getenv("BENCH_MESH_LAZY"), dropped: -1}
	var err error
	if res.n, err = strconv.Atoi(os.Getenv("BENCH_MESH_SIM_N")); err != nil || res.n < 1 || res.n > 5000 {
		b.Fatalf("BENCH_MESH_SIM_N=%q: want a count 1-5000", os.Getenv("BENCH_MESH_SIM_N"))
	}
	res.wake = min(res.n, benchEnvInt(b, "BENCH_MESH_SIM_WAKE", 50))
	res.settle = envDuration(b, "BENCH_MESH_SIM_SETTLE", 45*time.Second)
	res.window = envDuration(b, "BENCH_MESH_SIM_WINDOW", time.Minute)
	res.wakeW = envDuration(b, "BENCH_MESH_SIM_WAKE_WINDOW", 30*time.Second)
	if err := natlab.Check(); err != nil {
		b.Fatalf("natlab: %v (run as root: sudo make bench-mesh-sim)", err)
	}
	runMeshSim(b, res)
	table := meshSimTable(res)
	fmt.Println(table)
	if out := os.Getenv("BENCH_MESH_SIM_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatalf("write %s: %v", out, err)
		}
	}
}

func runMeshSim(b *testing.B, res *meshSimResult) {
	// All simulated nodes come from one address with one key: the
	// per-source and per-key limits are off.
	lab, coord := newLabWith(b, meshlab.StartCoordinatorArgs("--metrics-listen", coordMetricsAddr,
		"--auth-fail-burst", "-1", "--join-burst", "-1", "--max-conns-per-ip", "-1"))
	key := authKey(b, coord, true)
	start := time.Now()
	swarm := joinSimPeers(b, lab, coord, key, res.n)
	res.joinTook = time.Since(start)
	b.Logf("%d simulated nodes online after %v", res.n, res.joinTook.Round(time.Millisecond))

	h, err := lab.AddPublicHost("real", simAgentIP)
	if err != nil {
		b.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, h, "real")
	if err != nil {
		b.Fatal(err)
	}
	if res.lazy != "" {
		a.ExtraArgs = append(a.ExtraArgs, "--lazy-peers", res.lazy)
	}
	start = time.Now()
	if err := a.Start(key); err != nil {
		b.Fatal(err)
	}
	if err := meshlab.WaitAll(b.Context(), []*meshlab.Agent{a}, 3*time.Minute, func(_ *meshlab.Agent, st *meshlab.Status) error {
		if n := st.OnlinePeers(); n < res.n {
			return fmt.Errorf("%d of %d peers online", n, res.n)
		}
		return nil
	}); err != nil {
		b.Fatalf("agent never saw its peers: %v\n%s", err, tailLines(a.Proc.Log(), 20))
	}
	res.peersTook = time.Since(start)
	b.Logf("agent sees %d online peers after %v; settling %v", res.n, res.peersTook.Round(time.Millisecond), res.settle)
	time.Sleep(res.settle)
	res.idle = measureProc(b, a, res.window, nil)

	// Wake res.wake peers the way `status --peer` does, a few at once.
	var mu sync.Mutex
	res.woken = measureProc(b, a, res.wakeW, func() {
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for i := range res.wake {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(b.Context(), 15*time.Second)
				defer cancel()
				_, err := a.Host.Run(ctx, a.Coord.Bins.Agent, "status", "--socket", a.Socket, "--peer", "sim-"+strconv.Itoa(i), "--json")
				if err != nil {
					mu.Lock()
					res.wakeLines = append(res.wakeLines, fmt.Sprintf("status --peer sim-%d: %v", i, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	})
	if st, err := a.Status(b.Context()); err == nil {
		for _, p := range st.Peers {
			if p.Path != "idle" {
				res.awakeAfter++
				if p.Path == "direct" || p.Path == "relay" {
					res.wokeDirect++
				}
			}
		}
	} else {
		b.Logf("status: %v", err)
	}
	res.lost = swarm.Lost.Load()
	res.dropped = coordDropped(b, coord)
	b.Logf("top lines of the agent:\n%s", tailLines(a.Proc.Log(), 15))
}

// joinSimPeers registers n simulated nodes (internal/loadgen) from the lab
// host simBenchIP and holds their streams until the test ends.
func joinSimPeers(t testing.TB, lab *natlab.Lab, coord *meshlab.Coordinator, key string, n int) *loadgen.Swarm {
	simHost, err := lab.AddPublicHost("sim", simBenchIP)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: simHost.DialContext, MaxIdleConnsPerHost: 16}}
	swarm, err := loadgen.JoinSwarm(t.Context(), loadgen.SwarmConfig{URL: coord.URL, AuthKey: key, N: n, HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(swarm.Close)
	return swarm
}

// measureProc samples the agent's CPU and RSS over window (running during, if
// set, at its start) and counts the agent's log lines written meanwhile.
func measureProc(b *testing.B, a *meshlab.Agent, window time.Duration, during func()) procWindow {
	return measureProcs(b, []*meshlab.Agent{a}, window, during)[0]
}

// measureProcs is measureProc for several agents over the same window.
func measureProcs(b *testing.B, as []*meshlab.Agent, window time.Duration, during func()) []procWindow {
	ws := make([]procWindow, len(as))
	lines0 := make([]int, len(as))
	t0 := make([]int64, len(as))
	for i, a := range as {
		lines0[i] = len(logLines(a.Proc.Log()))
		var err error
		if t0[i], err = procCPUTicks(a.Proc.Cmd.Process.Pid); err != nil {
			b.Fatalf("agent %s CPU: %v", a.Name, err)
		}
	}
	start := time.Now()
	if during != nil {
		during()
	}
	for time.Since(start) < window {
		time.Sleep(time.Second)
		for i, a := range as {
			if kib, err := procRSSKiB(a.Proc.Cmd.Process.Pid); err == nil {
				ws[i].rssMaxKiB = max(ws[i].rssMaxKiB, kib)
				ws[i].rssKiB = kib
			}
		}
	}
	took := time.Since(start)
	for i, a := range as {
		w := &ws[i]
		t1, err := procCPUTicks(a.Proc.Cmd.Process.Pid)
		if err != nil {
			b.Fatalf("agent %s CPU: %v", a.Name, err)
		}
		w.cpuPct = float64(t1-t0[i]) / 100 / took.Seconds() * 100
		w.hwmKiB, _ = procStatusKiB(a.Proc.Cmd.Process.Pid, "VmHWM")
		lines := logLines(a.Proc.Log())[lines0[i]:]
		w.lines = len(lines)
		counts := map[string]int{}
		for _, l := range lines {
			counts[lineKey(l)]++
		}
		keys := slices.Collect(maps.Keys(counts))
		slices.SortFunc(keys, func(x, y string) int { return cmp.Compare(counts[y], counts[x]) })
		for _, k := range keys[:min(len(keys), 5)] {
			w.top = append(w.top, fmt.Sprintf("%d× %s", counts[k], k))
		}
		w.perHour = float64(w.lines) * float64(time.Hour) / float64(took)
	}
	return ws
}

// procCPUTicks is utime + stime from /proc/PID/stat, in USER_HZ (100/s).
func procCPUTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from after it.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return u + st, nil
}

func tailLines(s string, n int) string {
	ls := logLines(s)
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

func benchEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		b.Fatalf("%s=%q: want a count", name, s)
	}
	return v
}

func meshSimTable(r *meshSimResult) string {
	mib := func(k int64) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }
	lazy := r.lazy
	if lazy == "" {
		lazy = "auto"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "## bench-mesh-sim: one real agent among %d simulated peers (--lazy-peers %s)\n\n", r.n, lazy)
	fmt.Fprintf(&s, "Simulated nodes online after %v; the agent saw all %d online after %v, then settled %v.\n\n",
		r.joinTook.Round(time.Millisecond), r.n, r.peersTook.Round(time.Millisecond), r.settle)
	s.WriteString("| phase | window | RSS at end | RSS max | CPU (one core) | log lines | lines/hour |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&s, "| idle, every peer asleep | %v | %s | %s | %.2f %% | %d | %.0f |\n", r.window, mib(r.idle.rssKiB), mib(r.idle.rssMaxKiB), r.idle.cpuPct, r.idle.lines, r.idle.perHour)
	fmt.Fprintf(&s, "| after waking %d (status --peer) | %v | %s | %s | %.2f %% | %d | %.0f |\n\n", r.wake, r.wakeW, mib(r.woken.rssKiB), mib(r.woken.rssMaxKiB), r.woken.cpuPct, r.woken.lines, r.woken.perHour)
	fmt.Fprintf(&s, "- Peers not idle at the end: %d, with a path: %d (simulated peers never answer ICE, so woken sessions end without a path).\n", r.awakeAfter, r.wokeDirect)
	fmt.Fprintf(&s, "- Simulated streams the coordinator ended: %d; meshvpn_coordinator_streams_dropped_total: %.0f.\n", r.lost, r.dropped)
	for _, ph := range []struct {
		name string
		w    procWindow
	}{{"idle", r.idle}, {"after the wakes", r.woken}} {
		if len(ph.w.top) > 0 {
			fmt.Fprintf(&s, "- Most frequent lines %s: %s\n", ph.name, strings.Join(ph.w.top, "; "))
		}
	}
	if len(r.wakeLines) > 0 {
		fmt.Fprintf(&s, "- %d wake requests failed, first: %s\n", len(r.wakeLines), r.wakeLines[0])
	}
	return s.String()
}

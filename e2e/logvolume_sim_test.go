package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
)

// TestLogVolumeSimPeers: the issue-16 goal of a steady agent with 100
// peers writing under 100 lines an hour at info level. Two real agents on
// public lab hosts, with a direct path between them, among 98 simulated
// nodes (internal/loadgen) that are online but never answer ICE, so each
// agent has 99 peers. The agents run with --lazy-peers off: every peer
// gets its sessions at once and 98 of them fail and are retried for as
// long as the test runs - the noisiest steady state there is (a lazy
// agent's sleeping peers write nothing). After a settle longer than the
// rate limiter's one-minute summaries of the start-up lines, the lines
// each agent writes in the window are extrapolated to an hour.
// MESHVPN_LOGSIM_WINDOW changes the window; MESHVPN_LOGSIM_LAZY the
// agents' --lazy-peers (set it empty for binaries that predate the flag).
func TestLogVolumeSimPeers(t *testing.T) {
	const sims = 98
	const settle = 75 * time.Second
	window := envDuration(t, "MESHVPN_LOGSIM_WINDOW", 2*time.Minute)
	lazy, ok := os.LookupEnv("MESHVPN_LOGSIM_LAZY")
	if !ok {
		lazy = "off"
	}
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--auth-fail-burst", "-1", "--join-burst", "-1"))
	key := authKey(t, coord, true)
	swarm := joinSimPeers(t, lab, coord, key, sims)
	var agents []*meshlab.Agent
	for i, name := range []string{"lsa", "lsb"} {
		h, err := lab.AddPublicHost(name, fmt.Sprintf("203.0.113.%d", 60+i))
		if err != nil {
			t.Fatal(err)
		}
		a, err := meshlab.NewAgent(coord, h, name)
		if err != nil {
			t.Fatal(err)
		}
		if lazy != "" {
			a.ExtraArgs = append(a.ExtraArgs, "--lazy-peers", lazy)
		}
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	direct := func(string, string) string { return "direct" }
	if err := waitAllPaths(t.Context(), agents, direct, 90*time.Second); err != nil {
		t.Fatalf("real agents not direct: %v", err)
	}
	if err := meshlab.WaitAll(t.Context(), agents, 30*time.Second, func(_ *meshlab.Agent, st *meshlab.Status) error {
		if n := st.OnlinePeers(); n != sims+1 {
			return fmt.Errorf("%d online peers, want %d", n, sims+1)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)
	before := make([]int, len(agents))
	for i, a := range agents {
		before[i] = len(logLines(a.Proc.Log()))
	}
	time.Sleep(window)
	if err := waitAllPaths(t.Context(), agents, direct, 5*time.Second); err != nil {
		t.Errorf("real agents lost their direct path in the window: %v", err)
	}
	byMsg := map[string]int{}
	for i, a := range agents {
		lines := logLines(a.Proc.Log())[before[i]:]
		for _, l := range lines {
			byMsg[lineKey(l)]++
		}
		perHour := float64(len(lines)) * float64(time.Hour) / float64(window)
		t.Logf("%s (%d peers, %d without an answer): %d lines until steady, %d in the %v window = %.0f lines/hour",
			a.Name, sims+1, sims, before[i], len(lines), window, perHour)
		if perHour >= maxLinesPerHour {
			t.Errorf("%s: steady agent with %d peers writes %.0f lines/hour at info level, want < %d", a.Name, sims+1, perHour, maxLinesPerHour)
		}
	}
	t.Log("most frequent lines in the window, both agents:")
	logTop(t, byMsg, 10)
	if n := swarm.Lost.Load(); n != 0 {
		t.Errorf("coordinator ended %d simulated streams", n)
	}
}

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// maxLinesPerHour is the goal for a steady agent at info level
// (there: with 100 peers; the lab mesh is smaller, so this is generous).
const maxLinesPerHour = 100

// maxStartupPerPeer bounds the lines an agent writes per peer while the
// mesh forms: a few events each (added, path up, relay then direct), not
// pion's running commentary on every check.
const maxStartupPerPeer = 6

// TestLogVolumeSteadyMesh starts a small mesh - agents on public lab hosts
// and two behind symmetric NATs, whose pair can only meet through the relay
// and keeps probing for a direct path - waits until every pair is connected
// and the mesh has settled, then counts the lines each agent writes (at the
// default info level) over a window and extrapolates them to an hour.
// MESHVPN_LOGVOL_AGENTS (public agents) and MESHVPN_LOGVOL_WINDOW (a Go
// duration) change the size and the window.
//
// One burst per agent is left out of the count when at least half of the
// agents logged at the same moment: on a loaded lab machine every path of
// every agent sometimes goes down and up at once (seen at load 5 on two
// cores), a stall of the machine, not steady state. The burst's lines are
// still shown. A single agent's flapping, or anything periodic, counts.
func TestLogVolumeSteadyMesh(t *testing.T) {
	nPublic := envInt(t, "MESHVPN_LOGVOL_AGENTS", 6)
	window := envDuration(t, "MESHVPN_LOGVOL_WINDOW", 3*time.Minute)
	const settle = 30 * time.Second
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	var agents []*meshlab.Agent
	for i := range nPublic {
		name := fmt.Sprintf("lv%d", i+1)
		h, err := lab.AddPublicHost(name, fmt.Sprintf("203.0.113.%d", 40+i))
		if err != nil {
			t.Fatal(err)
		}
		a, err := meshlab.NewAgent(coord, h, name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	relayed := map[string]bool{}
	for i := range 2 {
		a := addSiteAgent(t, lab, coord, fmt.Sprintf("lvsym%d", i+1), natlab.Symmetric)
		agents = append(agents, a)
		relayed[a.Name] = true
	}
	n := len(agents)
	// Both symmetric agents need the relay between them; every other pair
	// goes direct.
	wantPath := func(a, b string) string {
		if relayed[a] && relayed[b] {
			return "relay"
		}
		return "direct"
	}
	start := time.Now()
	for _, a := range agents {
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitAllPaths(t.Context(), agents, wantPath, 90*time.Second); err != nil {
		t.Fatalf("mesh not connected: %v", err)
	}
	t.Logf("%d agents, every pair connected after %v", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(settle)
	steadyAt := time.Since(start).Round(time.Second)
	startup := make([]int, n)
	for i, a := range agents {
		startup[i] = len(logLines(a.Proc.Log()))
	}
	coordStartup := len(logLines(coord.Proc.Log()))
	time.Sleep(window)
	if err := waitAllPaths(t.Context(), agents, wantPath, 5*time.Second); err != nil {
		t.Errorf("mesh lost a path in the window: %v", err)
	}

	perHour := func(lines int) float64 { return float64(lines) * float64(time.Hour) / float64(window) }
	worst, worstStart := 0, 0
	byMsg, startMsg := map[string]int{}, map[string]int{}
	steady := make([][]timedLine, n)
	for i, a := range agents {
		lines := logLines(a.Proc.Log())
		steady[i] = timeLines(lines[startup[i]:])
		for _, l := range lines[:startup[i]] {
			startMsg[lineKey(l)]++
		}
	}
	for i, a := range agents {
		counted := steady[i]
		note := ""
		if b := labWideBurst(i, steady); b != nil {
			counted = slices.DeleteFunc(slices.Clone(counted), func(l timedLine) bool { return !l.at.Before(b[0].at) && !l.at.After(b[len(b)-1].at) })
			note = fmt.Sprintf(" (%d more in a lab-wide burst at %s, left out)", len(b), b[0].at.Format("15:04:05"))
			for _, l := range b[:min(len(b), 3)] {
				t.Logf("  %s burst: %.200s", a.Name, l.text)
			}
		}
		for _, l := range counted {
			byMsg[lineKey(l.text)]++
		}
		t.Logf("%s: %d lines until steady (%v after start), %d in the %v window%s = %.0f lines/hour",
			a.Name, startup[i], steadyAt, len(counted), window, note, perHour(len(counted)))
		worst, worstStart = max(worst, len(counted)), max(worstStart, startup[i])
	}
	coordLines := len(logLines(coord.Proc.Log()))
	t.Logf("coordinator: %d lines until steady, %d in the window = %.0f lines/hour", coordStartup, coordLines-coordStartup, perHour(coordLines-coordStartup))
	t.Log("most frequent lines until steady, all agents:")
	logTop(t, startMsg, 15)
	t.Log("most frequent lines in the window, all agents:")
	logTop(t, byMsg, 10)
	if worstStart > maxStartupPerPeer*(n-1) {
		t.Errorf("an agent wrote %d lines while the mesh formed, %.1f per peer, want <= %d per peer", worstStart, float64(worstStart)/float64(n-1), maxStartupPerPeer)
	}
	if got := perHour(worst); got >= maxLinesPerHour {
		t.Errorf("steady agent with %d peers writes %.0f lines/hour at info level, want < %d", n-1, got, maxLinesPerHour)
	}
}

// logTop logs the n most frequent keys of counts.
func logTop(t *testing.T, counts map[string]int, n int) {
	keys := slices.Collect(maps.Keys(counts))
	slices.SortFunc(keys, func(x, y string) int { return cmp.Compare(counts[y], counts[x]) })
	for _, k := range keys[:min(len(keys), n)] {
		t.Logf("  %5d  %s", counts[k], k)
	}
}

// waitAllPaths waits until every agent reports the path want(self, peer)
// to every other agent.
func waitAllPaths(ctx context.Context, agents []*meshlab.Agent, want func(a, b string) string, timeout time.Duration) error {
	return meshlab.WaitAll(ctx, agents, timeout, func(a *meshlab.Agent, st *meshlab.Status) error {
		for _, b := range agents {
			if b == a {
				continue
			}
			if p := st.Peer(b.Name); p == nil || p.Path != want(a.Name, b.Name) {
				return fmt.Errorf("%s -> %s: want path %s, have %+v", a.Name, b.Name, want(a.Name, b.Name), p)
			}
		}
		return nil
	})
}

// timedLine is a log line with its time (that of the line before it when
// it carries none).
type timedLine struct {
	at   time.Time
	text string
}

var (
	slogTime = regexp.MustCompile(`^time=(\S+)`)
	pionTime = regexp.MustCompile(`^\w+ \w+: (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)`)
)

func timeLines(lines []string) []timedLine {
	out := make([]timedLine, len(lines))
	var at time.Time
	for i, l := range lines {
		if m := slogTime.FindStringSubmatch(l); m != nil {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				at = ts
			}
		} else if m := pionTime.FindStringSubmatch(l); m != nil {
			if ts, err := time.ParseInLocation("2006/01/02 15:04:05", m[1], time.Local); err == nil {
				at = ts
			}
		}
		out[i] = timedLine{at, l}
	}
	return out
}

// burstGap separates bursts: lines closer than this belong together.
const burstGap = 3 * time.Second

// labWideBurst returns agent i's largest burst of lines if at least half
// of the other agents logged within burstGap of it, else nil.
func labWideBurst(i int, lines [][]timedLine) []timedLine {
	var best, cur []timedLine
	for _, l := range lines[i] {
		if len(cur) > 0 && l.at.Sub(cur[len(cur)-1].at) > burstGap {
			cur = nil
		}
		cur = append(cur, l)
		if len(cur) > len(best) {
			best = cur
		}
	}
	if len(best) < 2 {
		return nil
	}
	from, to := best[0].at.Add(-burstGap), best[len(best)-1].at.Add(burstGap)
	others := 0
	for j, ls := range lines {
		if j != i && slices.ContainsFunc(ls, func(l timedLine) bool { return !l.at.Before(from) && !l.at.After(to) }) {
			others++
		}
	}
	if 2*others < len(lines)-1 {
		return nil
	}
	return best
}

// logLines splits a process log into its non-empty lines.
func logLines(log string) []string {
	return slices.DeleteFunc(strings.Split(log, "\n"), func(l string) bool { return l == "" })
}

var (
	slogMsg  = regexp.MustCompile(`level=(\w+) msg=("(?:[^"\\]|\\.)*"|\S+)`)
	pionLine = regexp.MustCompile(`^(\w+ \w+): \S+ \S+ (?:\S+: )?(.{0,60})`)
)

// lineKey groups a log line by level and message, leaving out the
// attributes (addresses, peers) that make each line unique.
func lineKey(l string) string {
	if m := slogMsg.FindStringSubmatch(l); m != nil {
		return m[1] + " " + m[2]
	}
	if m := pionLine.FindStringSubmatch(l); m != nil {
		return "pion " + m[1] + " " + m[2]
	}
	return l[:min(len(l), 80)]
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 2 {
		t.Fatalf("%s=%q: want a number >= 2", name, s)
	}
	return v
}

func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 3m", name, s)
	}
	return v
}

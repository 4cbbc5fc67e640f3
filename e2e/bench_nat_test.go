package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// natBenchKind is one kind of site in make bench-nat: a NAT kind, maybe
// behind an ISP routing hop. Each gets two sites (NAME1, NAME2), so that
// every kind also meets its own kind.
type natBenchKind struct {
	short, label string
	kind         natlab.Kind
	ispHop       bool
}

var natBenchKinds = []natBenchKind{
	{"fc", "full cone", natlab.FullCone, false},
	{"rc", "restricted cone", natlab.RestrictedCone, false},
	{"pr", "port-restricted", natlab.PortRestricted, false},
	{"dn", "double NAT", natlab.DoubleNAT, false},
	{"sy", "symmetric", natlab.Symmetric, false},
	{"pi", "port-restricted + ISP hop", natlab.PortRestricted, true},
	{"si", "symmetric + ISP hop", natlab.Symmetric, true},
}

// natBenchWindow is how long one attempt watches the pairs, from all
// agents being online: a pair that is not direct by then counts as
// relayed.
const natBenchWindow = 20 * time.Second

// natBenchResult is what the attempts saw of one kind pair on one router
// variant: how many pair samples there were, and each direct one's time.
type natBenchResult struct {
	samples  int
	directMs []int64
}

// BenchmarkNATPairs (make bench-nat) measures, for every pair of NAT kinds
// on both router variants, the share of cold starts that end direct and
// the median time to direct. Each attempt stops every agent, flushes
// conntrack in every namespace of the lab, starts all agents at once and
// watches every pair for natBenchWindow. A kind pair counts every pair of
// its agents (4 per attempt between two kinds, 1 within a kind). It
// prints a markdown table and writes it to $BENCH_NAT_OUT. It fails only
// when the lab cannot be built or the agents do not come online, never on
// the numbers. It runs only when BENCH_NAT_N (attempts) is set, so that
// make bench stays short. BENCH_NAT_WAN_DELAY (a duration, e.g. 5ms)
// gives every site that WANDelay, so that two NATs are twice that apart.
func BenchmarkNATPairs(b *testing.B) {
	n, err := strconv.Atoi(os.Getenv("BENCH_NAT_N"))
	if os.Getenv("BENCH_NAT_N") == "" {
		b.Skip("BENCH_NAT_N not set (make bench-nat N=3)")
	}
	if err != nil || n < 1 || n > 100 {
		b.Fatalf("BENCH_NAT_N=%q: want a count 1-100", os.Getenv("BENCH_NAT_N"))
	}
	var wanDelay time.Duration
	if s := os.Getenv("BENCH_NAT_WAN_DELAY"); s != "" {
		if wanDelay, err = time.ParseDuration(s); err != nil {
			b.Fatalf("BENCH_NAT_WAN_DELAY=%q: %v", s, err)
		}
	}
	// A bench asked for by name must not pass with no table: no lab is a
	// failure here, not a skip.
	if err := natlab.Check(); err != nil {
		b.Fatalf("natlab: %v (run as root: sudo make bench-nat)", err)
	}
	if _, err := exec.LookPath("conntrack"); err != nil {
		b.Fatal("conntrack missing: apt-get install conntrack")
	}
	results := map[natlab.Variant]map[string]*natBenchResult{}
	for _, v := range natlab.Variants {
		b.Run(v.String(), func(b *testing.B) {
			results[v] = benchNATVariant(b, v, n, wanDelay)
		})
	}
	table := natBenchTable(results, n, wanDelay)
	fmt.Println(table)
	if out := os.Getenv("BENCH_NAT_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatalf("write %s: %v", out, err)
		}
		b.Logf("table written to %s", out)
	}
}

// natBenchPairKey names the kind pair of sites i and j, in natBenchKinds
// order.
func natBenchPairKey(i, j int) string {
	if i > j {
		i, j = j, i
	}
	return natBenchKinds[i].label + " ↔ " + natBenchKinds[j].label
}

// benchNATVariant builds one lab of variant v and runs n attempts in it.
func benchNATVariant(b *testing.B, v natlab.Variant, n int, wanDelay time.Duration) map[string]*natBenchResult {
	lab, coord := newLab(b)
	key := authKey(b, coord, true)
	var agents []*meshlab.Agent
	kindIdx := map[*meshlab.Agent]int{}
	var boxes []*natlab.Host
	for i, k := range natBenchKinds {
		for _, suffix := range []string{"1", "2"} {
			name := k.short + suffix
			s, err := lab.AddSiteSpec(name, natlab.SiteSpec{Kind: k.kind, Variant: v, ISPHop: k.ispHop, WANDelay: wanDelay})
			if err != nil {
				b.Fatal(err)
			}
			for _, h := range []*natlab.Host{s.Router, s.Carrier, s.ISP, s.Host} {
				if h != nil {
					boxes = append(boxes, h)
				}
			}
			a, err := meshlab.NewAgent(coord, s.Host, name)
			if err != nil {
				b.Fatal(err)
			}
			agents = append(agents, a)
			kindIdx[a] = i
		}
	}
	res := map[string]*natBenchResult{}
	for attempt := 1; attempt <= n; attempt++ {
		for _, a := range agents {
			if err := a.Stop(10 * time.Second); err != nil {
				b.Fatalf("stop %s: %v", a.Name, err)
			}
		}
		flushConntrack(b, boxes)
		// Later attempts rejoin with the stored credential, as a restart.
		startOnline(b, key, agents...)
		key = ""
		var pairs []*meshPair
		for i, a := range agents {
			for _, c := range agents[i+1:] {
				pairs = append(pairs, &meshPair{a: a, b: c})
			}
		}
		observeBench(b.Context(), agents, pairs, natBenchWindow)
		direct := 0
		for _, p := range pairs {
			k := natBenchPairKey(kindIdx[p.a], kindIdx[p.b])
			r := res[k]
			if r == nil {
				r = &natBenchResult{}
				res[k] = r
			}
			r.samples++
			if natBenchDirect(p) {
				r.directMs = append(r.directMs, p.directMs())
				direct++
			}
		}
		b.Logf("%s attempt %d/%d: %d of %d pairs direct", v, attempt, n, direct, len(pairs))
	}
	return res
}

// flushConntrack empties the conntrack table of every namespace given
// (routers, carrier NATs, ISP hops, hosts), so that an attempt starts with
// no flow left from the last one.
func flushConntrack(tb testing.TB, hosts []*natlab.Host) {
	tb.Helper()
	for _, h := range hosts {
		if h == nil {
			continue
		}
		out, err := h.Run(tb.Context(), "conntrack", "-F")
		// conntrack -F on an empty table is not an error, but older
		// versions say so on stderr with status 1.
		if err != nil && !strings.Contains(out, "0 flow entries") {
			tb.Fatalf("conntrack -F in %s: %v: %s", h.NS, err, out)
		}
	}
}

// natBenchDirect tells whether both sides of p ended on a direct path
// with a time to direct.
func natBenchDirect(p *meshPair) bool {
	return p.ab != nil && p.ba != nil && p.ab.Path == "direct" && p.ba.Path == "direct" && p.directMs() > 0
}

// natBenchFinal tells whether p needs no more watching: direct both ways,
// or relayed both ways with a reason that is not "still trying".
func natBenchFinal(p *meshPair) bool {
	if natBenchDirect(p) {
		return true
	}
	final := func(s *meshlab.PeerStatus) bool {
		return s != nil && s.Path == "relay" && s.Reason != "" &&
			s.Reason != "direct path not found yet" && s.Reason != "direct path lost, checking it again"
	}
	return final(p.ab) && final(p.ba)
}

// observeBench polls every agent (see observePairs) until every pair is
// final or window has passed.
func observeBench(ctx context.Context, agents []*meshlab.Agent, pairs []*meshPair, window time.Duration) {
	deadline := time.Now().Add(window)
	for {
		// observePairs with a zero window polls once.
		observePairs(ctx, agents, pairs, 0)
		if !slices.ContainsFunc(pairs, func(p *meshPair) bool { return !natBenchFinal(p) }) ||
			time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// natBenchTable renders the results as a markdown table, one row per
// kind pair, both router variants side by side.
func natBenchTable(results map[natlab.Variant]map[string]*natBenchResult, n int, wanDelay time.Duration) string {
	var sb strings.Builder
	lat := "flat lab bridge (microseconds between NATs)"
	if wanDelay > 0 {
		lat = fmt.Sprintf("%v between NATs (WAN delay %v per site)", 2*wanDelay, wanDelay)
	}
	fmt.Fprintf(&sb, "make bench-nat: %d cold starts per router variant, %s, %s, pairs watched for %v from all agents online.\n\n",
		n, time.Now().UTC().Format("2006-01-02"), lat, natBenchWindow)
	sb.WriteString("| pair | input drop: direct | median to direct | input accept: direct | median to direct |\n")
	sb.WriteString("|---|---|---|---|---|\n")
	for i := range natBenchKinds {
		for j := i; j < len(natBenchKinds); j++ {
			k := natBenchPairKey(i, j)
			fmt.Fprintf(&sb, "| %s |", k)
			for _, v := range natlab.Variants {
				r := results[v][k]
				if r == nil {
					sb.WriteString(" - | - |")
					continue
				}
				med := "-"
				if len(r.directMs) > 0 {
					slices.Sort(r.directMs)
					med = fmt.Sprintf("%.1f s", float64(r.directMs[len(r.directMs)/2])/1000)
				}
				fmt.Fprintf(&sb, " %d/%d | %s |", len(r.directMs), r.samples, med)
			}
			sb.WriteString("\n")
		}
	}
	return sb.String()
}

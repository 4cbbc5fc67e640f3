package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestSyncOpen joins port-restricted and double-NAT sites whose routers
// accept input or drop it, in every mix, each 5-8 ms from the internet
// bridge: no side may send first to a router that accepts input
// (agent/punchorder.go), so every pair must go direct by a synchronized
// open (agent/syncopen.go) within 3 s of both agents being online, and
// say so in last_change with the skew measured.
func TestSyncOpen(t *testing.T) {
	pairs := runMeshPairs(t, "mixed routers, 5-8 ms from the bridge", natlab.InputAccept, syncOpenSpots(), nil)
	t.Log(syncSkewTable(pairs))
	for _, p := range pairs {
		// Read again: the skew comes half a second after the path, and the
		// pair table may have been taken in between.
		ab, ba := peerStatus(t, p.a, p.b.Name), peerStatus(t, p.b, p.a.Name)
		for _, st := range []struct {
			from, to   string
			lastChange string
			ms         int64
		}{{p.a.Name, p.b.Name, ab.LastChange, ab.DirectAfterMs}, {p.b.Name, p.a.Name, ba.LastChange, ba.DirectAfterMs}} {
			if !strings.Contains(st.lastChange, "direct after synchronized open") || !strings.Contains(st.lastChange, "skew") {
				t.Errorf("%s -> %s: last_change %q, want a synchronized open with its skew", st.from, st.to, st.lastChange)
			}
			if st.ms > 3000 {
				t.Errorf("%s -> %s: direct after %d ms, want within 3 s of the peer being online", st.from, st.to, st.ms)
			}
		}
	}
	syncOpenSeenInStatus(t, pairs)
}

// syncOpenSpots are port-restricted and double-NAT sites whose routers
// accept input or drop it, 5-7 ms from the bridge: every pair needs a
// synchronized open.
func syncOpenSpots() []meshSpot {
	acc, drop := natlab.InputAccept, natlab.InputDrop
	return []meshSpot{
		{name: "pr-accept", kind: natlab.PortRestricted, variant: &acc, wan: 5 * time.Millisecond},
		{name: "dn-accept", kind: natlab.DoubleNAT, variant: &acc, wan: 7 * time.Millisecond},
		{name: "pr-drop", kind: natlab.PortRestricted, variant: &drop, wan: 6 * time.Millisecond},
		{name: "dn-drop", kind: natlab.DoubleNAT, variant: &drop, wan: 5 * time.Millisecond},
	}
}

// syncOpenSeenInStatus restarts every agent of the pairs at once (a
// clean start: new ports, no peer state; restarting only one is
// TestRestartOnePunch) while each agent's `status --json` is read in a loop:
// some side must show an open under way in `punch` (it runs for about
// half a second per side: clock pings, 300 ms to the instant, the
// checks), every side must then name it in last_change, and once direct
// no open may show.
func syncOpenSeenInStatus(t *testing.T, pairs []*meshPair) {
	var agents []*meshlab.Agent
	for _, p := range pairs {
		for _, a := range []*meshlab.Agent{p.a, p.b} {
			if !slices.Contains(agents, a) {
				agents = append(agents, a)
			}
		}
	}
	ctx := t.Context()
	for _, a := range agents {
		if err := a.Stop(15 * time.Second); err != nil {
			t.Fatalf("stop %s: %v", a.Name, err)
		}
	}

	pollCtx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := map[string][]string{} // "a -> b": the opens under way read
	reads := 0
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pollCtx.Err() == nil {
				st, err := a.Status(pollCtx)
				mu.Lock()
				if err == nil {
					reads++
					for _, p := range st.Peers {
						if strings.Contains(p.Punch, "synchronized open") {
							side := a.Name + " -> " + p.Name
							seen[side] = append(seen[side], p.Punch)
						}
					}
				}
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	for _, a := range agents {
		if err := a.Start(""); err != nil {
			stop()
			wg.Wait()
			t.Fatalf("restart %s: %v", a.Name, err)
		}
	}
	for _, p := range pairs {
		for _, s := range [][2]*meshlab.Agent{{p.a, p.b}, {p.b, p.a}} {
			from, to := s[0], s[1].Name
			last, err := meshlab.WaitPeer(ctx, from, to, 30*time.Second, func(p *meshlab.PeerStatus) error {
				if p.Path != "direct" || !strings.Contains(p.LastChange, "direct after synchronized open") || !strings.Contains(p.LastChange, "skew") {
					return fmt.Errorf("path %s, last_change %q", p.Path, p.LastChange)
				}
				return nil
			})
			if err != nil {
				t.Errorf("after the restart: %s -> %s: %v; want direct, last_change naming the synchronized open with its skew", from.Name, to, err)
				continue
			}
			if last.Punch != "" {
				t.Errorf("after the restart: %s -> %s: direct, but punch still %q", from.Name, to, last.Punch)
			}
		}
	}
	stop()
	wg.Wait()
	var b strings.Builder
	for _, side := range slices.Sorted(maps.Keys(seen)) {
		texts := seen[side]
		fmt.Fprintf(&b, "\n  %s: %d reads, first %q, last %q", side, len(texts), texts[0], texts[len(texts)-1])
	}
	t.Logf("all %d agents restarted, %d status reads in %v; synchronized opens seen under way on %d sides:%s",
		len(agents), reads, time.Since(start).Round(time.Millisecond), len(seen), b.String())
	if len(seen) == 0 {
		t.Errorf("no status read showed a synchronized open under way (punch) while %d pairs opened", len(pairs))
	}
}

// syncSkewTable tells, for every pair that made a synchronized open, how
// far apart its last two opens really went: every lab namespace reads
// one kernel clock, so the two agents' logged send times compare
// directly. The skew in last_change is what the agents can work out
// without a common clock (agent/syncclock.go openSkew); it also holds
// any asymmetry of the path and of the two receive paths.
func syncSkewTable(pairs []*meshPair) string {
	fired := map[*meshlab.Agent]map[string]int64{}
	for _, p := range pairs {
		for _, a := range []*meshlab.Agent{p.a, p.b} {
			if fired[a] == nil {
				fired[a] = syncFired(a.Proc.Log())
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "synchronized opens, last one per pair (lab clock):\n%-40s %10s  %s\n", "pair", "real skew", "last_change a->b")
	var skews []time.Duration
	for _, p := range pairs {
		fa, oka := fired[p.a][p.b.Name]
		fb, okb := fired[p.b][p.a.Name]
		if !oka || !okb {
			continue
		}
		d := (time.Duration(fb-fa) * time.Microsecond).Abs()
		skews = append(skews, d)
		lc := ""
		if st, err := p.a.Status(context.Background()); err == nil && st.Peer(p.b.Name) != nil {
			lc = st.Peer(p.b.Name).LastChange
		}
		fmt.Fprintf(&b, "%-40s %8.2fms  %s\n", p.name(), float64(d)/float64(time.Millisecond), lc)
	}
	if len(skews) > 0 {
		slices.Sort(skews)
		fmt.Fprintf(&b, "%d opens: real skew median %.2f ms, max %.2f ms\n", len(skews),
			float64(skews[len(skews)/2])/float64(time.Millisecond), float64(skews[len(skews)-1])/float64(time.Millisecond))
	}
	return b.String()
}

// syncFired reads an agent's log: the send time (unix µs) of its last
// synchronized open per peer.
func syncFired(log string) map[string]int64 {
	out := map[string]int64{}
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="synchronized open: `) || !strings.Contains(l, " fired_us=") {
			continue
		}
		peer, us := logField(l, "peer"), logField(l, "fired_us")
		var v int64
		if _, err := fmt.Sscan(us, &v); err == nil && peer != "" {
			out[peer] = v
		}
	}
	return out
}

// logField is the value of key=value in a slog text line.
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return strings.Trim(v, `"`)
}

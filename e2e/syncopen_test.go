package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	acc, drop := natlab.InputAccept, natlab.InputDrop
	spots := []meshSpot{
		{name: "pr-accept", kind: natlab.PortRestricted, variant: &acc, wan: 5 * time.Millisecond},
		{name: "dn-accept", kind: natlab.DoubleNAT, variant: &acc, wan: 7 * time.Millisecond},
		{name: "pr-drop", kind: natlab.PortRestricted, variant: &drop, wan: 6 * time.Millisecond},
		{name: "dn-drop", kind: natlab.DoubleNAT, variant: &drop, wan: 5 * time.Millisecond},
	}
	pairs := runMeshPairs(t, "mixed routers, 5-8 ms from the bridge", acc, spots, nil)
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

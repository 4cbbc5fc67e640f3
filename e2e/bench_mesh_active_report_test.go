package e2e

import (
	"fmt"
	"strings"
	"time"
)

// activeTable renders a make bench-mesh-active run as markdown.
func activeTable(r *activeResult) string {
	mib := func(k int64) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }
	var s strings.Builder
	fmt.Fprintf(&s, "## bench-mesh-active: one agent (--lazy-peers off) with %d working tunnels to %d real peer agents (default auto), %s\n\n",
		r.n, r.n, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	all := "not reached in " + activeBenchWindow.String()
	if r.allDirect > 0 {
		all = fmt.Sprintf("%.1f s", r.allDirect.Seconds())
	}
	fmt.Fprintf(&s, "Peers had addresses %.1f s after their start; the hub saw all %d online %.1f s after its own; every path direct at the hub after %s; "+
		"pings answered %d / %d; at the measure the hub had %d direct and %d relayed paths, and %d peers showed the hub direct. "+
		"Idle %v, then measured over %v (load average %s at the start, %s at the end). %s.\n\n",
		r.peersUp.Seconds(), r.n, r.hubUp.Seconds(), all, r.pinged, r.n, r.direct, r.relay, r.seenDirect,
		r.settle, r.window, r.load0, r.load1, r.neigh)
	s.WriteString("| agent | RSS at end | RSS max in window | VmHWM (life) | CPU (one core) | log lines | lines/hour |\n|---|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		w    procWindow
	}{{fmt.Sprintf("hub (%d active peers)", r.n), r.hub}, {r.peerName + " (one peer, default auto)", r.peer}} {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %.2f %% | %d | %.0f |\n", row.name, mib(row.w.rssKiB), mib(row.w.rssMaxKiB), mib(row.w.hwmKiB), row.w.cpuPct, row.w.lines, row.w.perHour)
	}
	s.WriteString("\n")
	if r.goroutines > 0 {
		fmt.Fprintf(&s, "- Hub after the window: %.0f goroutines, %.1f MiB heap in use.\n", r.goroutines, r.heap/(1<<20))
	}
	fmt.Fprintf(&s, "- After the idle window: %d / %d peers answered a ping again; %d direct paths at the hub.\n", r.pingedAfter, r.n, r.directAfter)
	for _, row := range []struct {
		name string
		w    procWindow
	}{{"hub", r.hub}, {r.peerName, r.peer}} {
		if len(row.w.top) > 0 {
			fmt.Fprintf(&s, "- Lines of %s in the window: %s\n", row.name, strings.Join(row.w.top, "; "))
		}
	}
	return s.String()
}

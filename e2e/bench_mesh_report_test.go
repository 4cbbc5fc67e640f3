package e2e

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/metrics"
)

// neighLimits are the neighbour-table thresholds a lab of 30 or more
// all-talking hosts needs (LAB-NOTES: the table is shared by every
// namespace, 1,024 entries by default, and 40 hosts need about 1,600).
var neighLimits = []struct {
	name string
	min  int
}{{"gc_thresh1", 1024}, {"gc_thresh2", 8192}, {"gc_thresh3", 16384}}

// neighBenchMin is the smallest mesh that gets the raised limits.
const neighBenchMin = 30

// raiseNeighLimits raises the machine-wide neighbour-table limits (IPv4
// and IPv6) that are below neighLimits when n needs it, and puts the old
// values back when b ends (after the lab is gone: cleanups run last in,
// first out). It returns a line for the report.
func raiseNeighLimits(b testing.TB, n int) string {
	if n < neighBenchMin {
		return fmt.Sprintf("neighbour-table limits left as they were (raised only from %d agents)", neighBenchMin)
	}
	var raised []string
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, l := range neighLimits {
			path := filepath.Join("/proc/sys/net", fam, "neigh/default", l.name)
			data, err := os.ReadFile(path)
			if err != nil {
				b.Fatalf("neighbour-table limit: %v", err)
			}
			old := strings.TrimSpace(string(data))
			if v, err := strconv.Atoi(old); err == nil && v >= l.min {
				continue
			}
			if err := os.WriteFile(path, []byte(strconv.Itoa(l.min)), 0o644); err != nil {
				b.Fatalf("raise %s: %v", path, err)
			}
			b.Cleanup(func() {
				if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
					b.Errorf("restore %s to %s: %v", path, old, err)
				}
			})
			raised = append(raised, fmt.Sprintf("%s %s %s→%d", fam, l.name, old, l.min))
		}
	}
	if len(raised) == 0 {
		return "neighbour-table limits already high enough"
	}
	b.Logf("raised for this run: %s", strings.Join(raised, ", "))
	return "neighbour-table limits raised for the run and restored after (" + strings.Join(raised, ", ") + ")"
}

// meshBenchMeasure reads RSS, log lines, the coordinator's sockets and its
// stream closes into res.
func meshBenchMeasure(b testing.TB, res *meshBenchResult, coord *meshlab.Coordinator, agents []*meshlab.Agent) {
	for _, a := range agents {
		if a.Running() != nil {
			b.Logf("agent %s is not running: %v", a.Name, a.Running())
			continue
		}
		res.running++
		if kib, err := procRSSKiB(a.Proc.Cmd.Process.Pid); err == nil {
			res.rssKiB = append(res.rssKiB, kib)
		} else {
			b.Logf("%s RSS: %v", a.Name, err)
		}
	}
	for _, a := range agents {
		log := a.Proc.Log()
		res.lines = append(res.lines, strings.Count(log, "\n"))
		res.warnLines = append(res.warnLines, strings.Count(log, "level=WARN")+strings.Count(log, "level=ERROR"))
	}
	var err error
	if res.coordSocks, err = procSockets(coord.Proc.Cmd.Process.Pid); err != nil {
		b.Logf("coordinator sockets: %v", err)
		res.coordSocks = -1
	}
	clog := coord.Proc.Log()
	for _, l := range streamCloseLines {
		res.closes[l] = strings.Count(clog, l)
	}
	res.dropped = coordDropped(b, coord)
}

// coordDropped reads meshvpn_coordinator_streams_dropped_total (all
// reasons) from the coordinator's /metrics on coordMetricsAddr; -1 when
// unread.
func coordDropped(b testing.TB, coord *meshlab.Coordinator) float64 {
	out, err := coord.Host.Run(b.Context(), "curl", "-sS", "--max-time", "5", "http://"+coordMetricsAddr+metrics.Path)
	if err != nil {
		b.Logf("coordinator /metrics: %v", err)
		return -1
	}
	m, err := metrics.Parse(strings.NewReader(out))
	if err != nil {
		b.Logf("coordinator /metrics: %v", err)
		return -1
	}
	dropped := 0.0
	for k, v := range m {
		if k == "meshvpn_coordinator_streams_dropped_total" || strings.HasPrefix(k, "meshvpn_coordinator_streams_dropped_total{") {
			dropped += v
		}
	}
	return dropped
}

// procRSSKiB is VmRSS from /proc/PID/status, in KiB.
func procRSSKiB(pid int) (int64, error) {
	return procStatusKiB(pid, "VmRSS")
}

// procStatusKiB reads a KiB field (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procSockets counts the process's open file descriptors that are sockets.
func procSockets(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		// An fd closed since ReadDir is not counted.
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n, nil
}

// medMax returns the median and the maximum of xs (0, 0 when empty).
func medMax[T int | int64](xs []T) (T, T) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// meshBenchTable renders res as a short markdown report.
func meshBenchTable(r *meshBenchResult) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "make bench-mesh: %d agents (%s hosts), all started at once, %s; pinged %s over the overlay; measured %v after the start (%v after the last pinged pair went direct or the %v window ended); %s.\n\n",
		r.n, r.nat, time.Now().UTC().Format("2006-01-02"), r.pairsNote, r.measuredAt.Round(100*time.Millisecond), r.settle, meshBenchWindow, r.neigh)
	sb.WriteString("| measure | value |\n|---|---|\n")
	all := "not reached in " + meshBenchWindow.String()
	if r.allDirect > 0 {
		all = fmt.Sprintf("%.1f s", r.allDirect.Seconds())
	}
	fmt.Fprintf(&sb, "| agents' --lazy-peers | %s |\n", cmp.Or(r.lazy, "default (auto)"))
	fmt.Fprintf(&sb, "| every pinged pair direct after | %s |\n", all)
	fmt.Fprintf(&sb, "| pinged pairs direct / answering ping | %d / %d of %d (to direct: median %.1f s, last %.1f s) |\n",
		r.directOK, r.pingOK, r.pairs, r.directMed.Seconds(), r.lastDirect.Seconds())
	stuck := "none"
	if len(r.stuck) > 0 {
		stuck = strings.Join(r.stuck, ", ")
	}
	fmt.Fprintf(&sb, "| agents running at the end | %d of %d |\n", r.running, r.n)
	fmt.Fprintf(&sb, "| status calls with no answer in %v | %d, on %d agents; still not answering at the end: %s |\n",
		meshStatusTimeout, r.missedCalls, r.missedAgents, stuck)
	rm, rx := medMax(r.rssKiB)
	fmt.Fprintf(&sb, "| agent RSS, median / max | %.1f / %.1f MiB (%d peers each) |\n", float64(rm)/1024, float64(rx)/1024, r.n-1)
	if r.coordSocks >= 0 {
		fmt.Fprintf(&sb, "| coordinator sockets | %d (%.1f per agent) |\n", r.coordSocks, float64(r.coordSocks)/float64(r.n))
	} else {
		sb.WriteString("| coordinator sockets | unread |\n")
	}
	lm, lx := medMax(r.lines)
	wm, wx := medMax(r.warnLines)
	fmt.Fprintf(&sb, "| log lines per agent (info level), median / max | %d / %d (warn+error: %d / %d) |\n", lm, lx, wm, wx)
	var closes []string
	total := 0
	for _, l := range streamCloseLines {
		total += r.closes[l]
		closes = append(closes, fmt.Sprintf("%q: %d", l, r.closes[l]))
	}
	dropped := "unread"
	if r.dropped >= 0 {
		dropped = strconv.FormatFloat(r.dropped, 'f', 0, 64)
	}
	fmt.Fprintf(&sb, "| streams closed by the coordinator | %d log lines (%s); streams_dropped_total %s |\n", total, strings.Join(closes, ", "), dropped)
	return sb.String()
}

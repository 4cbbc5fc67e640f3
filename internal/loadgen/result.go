package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
)

// Latency summarises how long one change took to reach each agent, in
// seconds from the moment the change was made.
type Latency struct {
	Agents int     `json:"agents"`
	P50    float64 `json:"p50_s"`
	P99    float64 `json:"p99_s"`
	Max    float64 `json:"max_s"`
}

func summarize(v []float64) Latency {
	if len(v) == 0 {
		return Latency{}
	}
	slices.Sort(v)
	q := func(p float64) float64 {
		// nearest rank: the smallest value with at least p of the samples
		// at or below it
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	return Latency{Agents: len(v), P50: q(0.50), P99: q(0.99), Max: v[len(v)-1]}
}

// Result is one run's figures.
type Result struct {
	N       int `json:"n"`
	Workers int `json:"workers"`
	// Replicas is how many coordinators served the agents, Store which
	// store they shared ("sqlite" or "postgres").
	Replicas int    `json:"replicas"`
	Store    string `json:"store"`
	// PerReplica are each replica's process figures; the fields below
	// (RSSBytes, CPU) are replica 0's.
	PerReplica []ReplicaFigures `json:"per_replica,omitempty"`
	// RegisterSeconds is the time to register all N agents.
	RegisterSeconds float64 `json:"register_s"`
	// ConnectSeconds is the time to open all N streams and receive every
	// netmap; SettleSeconds until the last delta of that storm arrived.
	ConnectSeconds float64 `json:"connect_s"`
	SettleSeconds  float64 `json:"settle_s"`
	// Coordinator process figures from /proc.
	RSSBytes        int64   `json:"rss_bytes"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	SetupCPUSeconds float64 `json:"setup_cpu_s"`
	TotalCPUSeconds float64 `json:"total_cpu_s"`
	IdleCPUPercent  float64 `json:"idle_cpu_percent"`
	// NetmapBytes is the largest full netmap frame an agent received.
	NetmapBytes int64 `json:"netmap_bytes"`
	// Join: a node registers. Online, Offline: its stream comes and goes.
	// Removal: an admin removes it (when the build has the command).
	Join    Latency `json:"join"`
	Online  Latency `json:"online"`
	Offline Latency `json:"offline"`
	// Removal is timed from launching `nodes remove` (the server tells the
	// agents before the command answers), so it includes the command's
	// start-up and admin-socket round trip; RemovalCommandMs is the
	// command's own time from launch to answer.
	Removal Latency `json:"removal"`
	// With replicas, the same for the agents of the replicas other than
	// the one the change was made on (through the database).
	JoinOther        Latency `json:"join_other_replicas"`
	OnlineOther      Latency `json:"online_other_replicas"`
	OfflineOther     Latency `json:"offline_other_replicas"`
	RemovalOther     Latency `json:"removal_other_replicas"`
	RemovalCommandMs float64 `json:"removal_command_ms,omitempty"`
	RemovalNote      string  `json:"removal_note,omitempty"`
	// With -policy: how long `policy set` took (read, check, compile,
	// store, queue every delta), and when each agent had its new filter,
	// timed from the command's start.
	PolicySetSeconds float64 `json:"policy_set_s,omitempty"`
	PolicyChange     Latency `json:"policy_change"`
	// LostStreams counts agent streams that ended during the measurement;
	// Notes says which probes did not reach every agent in time.
	LostStreams int64              `json:"lost_streams"`
	Notes       []string           `json:"notes,omitempty"`
	Coordinator map[string]float64 `json:"coordinator_metrics,omitempty"`
	// Storms are the reconnect storms after a coordinator restart, without
	// and with netmap-version resume (see storm.go).
	Storms []Storm `json:"reconnect_storms,omitempty"`
}

// ReplicaFigures are one coordinator process's figures from /proc.
type ReplicaFigures struct {
	RSSBytes        int64   `json:"rss_bytes"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	SetupCPUSeconds float64 `json:"setup_cpu_s"`
	TotalCPUSeconds float64 `json:"total_cpu_s"`
	IdleCPUPercent  float64 `json:"idle_cpu_percent"`
}

func (r *Result) note(err error, what string) {
	if err != nil {
		r.Notes = append(r.Notes, what+": "+err.Error())
	}
}

// Print writes a human summary.
func (r *Result) Print(w io.Writer) {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	ms := func(s float64) float64 { return s * 1000 }
	fmt.Fprintf(w, "coordinator under N=%d simulated agents (%d workers, loopback; %d replica(s), store %s)\n", r.N, r.Workers, r.Replicas, r.Store)
	fmt.Fprintf(w, "  registration of N     %8.2f s  (%.0f/s)\n", r.RegisterSeconds, float64(r.N)/r.RegisterSeconds)
	fmt.Fprintf(w, "  streams + netmaps     %8.2f s  (settled after %.2f s)\n", r.ConnectSeconds, r.SettleSeconds)
	fmt.Fprintf(w, "  RSS steady / peak     %8.1f MiB / %.1f MiB\n", mib(r.RSSBytes), mib(r.PeakRSSBytes))
	if r.Coordinator != nil {
		c := r.Coordinator
		fmt.Fprintf(w, "  Go heap / stacks      %8.1f MiB / %.1f MiB, %.0f goroutines\n",
			c["go_memstats_heap_inuse_bytes"]/(1<<20), c["go_memstats_stack_inuse_bytes"]/(1<<20), c["go_goroutines"])
	}
	fmt.Fprintf(w, "  CPU setup / total     %8.2f s / %.2f s;  idle %.1f%% of one core\n", r.SetupCPUSeconds, r.TotalCPUSeconds, r.IdleCPUPercent)
	if len(r.PerReplica) > 1 {
		for i, f := range r.PerReplica {
			fmt.Fprintf(w, "  replica %d             RSS %6.1f MiB (peak %.1f), CPU setup %.2f s, total %.2f s, idle %.1f%%\n",
				i, mib(f.RSSBytes), mib(f.PeakRSSBytes), f.SetupCPUSeconds, f.TotalCPUSeconds, f.IdleCPUPercent)
		}
	}
	fmt.Fprintf(w, "  full netmap           %8d bytes\n", r.NetmapBytes)
	line := func(name string, l Latency) {
		fmt.Fprintf(w, "  %-21s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d agents)\n", name, ms(l.P50), ms(l.P99), ms(l.Max), l.Agents)
	}
	if r.PolicySetSeconds > 0 {
		fmt.Fprintf(w, "  policy set command    %8.1f ms  (50 groups, 500 rules)\n", ms(r.PolicySetSeconds))
		line("policy change", r.PolicyChange)
	}
	line("join propagation", r.Join)
	line("online propagation", r.Online)
	line("offline propagation", r.Offline)
	if r.Replicas > 1 {
		line("join, remote", r.JoinOther)
		line("online, remote", r.OnlineOther)
		line("offline, remote", r.OfflineOther)
	}
	fmt.Fprintf(w, "  streams lost          %8d\n", r.LostStreams)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  NOTE: %s\n", n)
	}
	for _, s := range r.Storms {
		how := "full netmaps"
		if s.Resume {
			how = "with resume"
		}
		kind := "restart"
		if s.FailOver {
			kind = "fail-over"
		}
		fmt.Fprintf(w, "  %-9s storm, %-12s %d agents all current %6.2f s, settled %6.2f s, %.0f bytes/agent, %d resumes\n",
			kind, how+":", s.Agents, s.CurrentSeconds, s.SettleSeconds, s.BytesPerAgent, s.Resumes)
		if s.Lost > 0 {
			again := "dialled again"
			if !s.Resume {
				again = "dialled again if still without a first frame"
			}
			fmt.Fprintf(w, "  %-21s %d streams ended by the coordinator during the storm (%s)\n", "", s.Lost, again)
		}
		if s.DialRetries > 0 {
			fmt.Fprintf(w, "  %-21s %d stream dials retried after a backoff (first: %s)\n", "", s.DialRetries, s.DialError)
		}
		if s.StaleCommon+s.StaleOther > 0 || len(s.Misses) > 0 {
			fmt.Fprintf(w, "  %-21s full netmaps despite a version: %d holding the common one, %d another; coordinator's reasons %v\n",
				"", s.StaleCommon, s.StaleOther, s.Misses)
		}
		if s.Note != "" {
			fmt.Fprintf(w, "  NOTE: storm: %s\n", s.Note)
		}
	}
	if r.RemovalNote != "" {
		fmt.Fprintf(w, "  removal propagation   %s\n", r.RemovalNote)
	} else {
		line("removal propagation", r.Removal)
		if r.Replicas > 1 {
			line("removal, remote", r.RemovalOther)
		}
		fmt.Fprintf(w, "  %-21s (timed from launching `nodes remove`: includes its start-up and admin-socket\n"+
			"  %-21s round trip; the command answered after %.1f ms)\n", "", "", r.RemovalCommandMs)
	}
}

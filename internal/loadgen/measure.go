package loadgen

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// idleWindow is how long the idle CPU of the coordinator is sampled.
const idleWindow = 5 * time.Second

func (g *run) measure(ctx context.Context) (*Result, error) {
	n := g.cfg.N
	res := &Result{N: n, Workers: g.cfg.Workers, Replicas: len(g.reps), Store: cmp.Or(g.cfg.Store, "sqlite")}
	start, err := g.readProcs()
	if err != nil {
		return nil, err
	}
	key, err := g.createKey(ctx)
	if err != nil {
		return nil, err
	}
	// Under a policy, agents carry tags t0..t9 (one key per tag) and the
	// probe the tag every agent may reach.
	keys, probeKey := []string{key}, key
	if g.cfg.Policy {
		keys = keys[:0]
		for t := range policyTags {
			k, err := g.createKey(ctx, "--tag", fmt.Sprintf("t%d", t))
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
		if probeKey, err = g.createKey(ctx, "--tag", "probe"); err != nil {
			return nil, err
		}
		took, err := g.setPolicy(ctx, 0)
		if err != nil {
			return nil, err
		}
		g.log.Info("policy set", "groups", policyGroups, "rules", policyRules, "took", took)
	}
	// Agent n is the probe: it joins, goes offline and is removed while the
	// others watch.
	g.agents = make([]*simAgent, n+1)
	for i := range g.agents {
		g.agents[i] = &simAgent{index: i, pub: newPublicKey()}
	}
	setupCtx, cancel := context.WithTimeout(ctx, g.cfg.SetupTimeout)
	defer cancel()

	g.log.Info("registering", "agents", n, "workers", g.cfg.Workers)
	t0 := time.Now()
	if err := g.parallel(setupCtx, n, func(ctx context.Context, i int) error {
		return g.agents[i].register(ctx, g.hc, g.repOf(i).base, keys[i%len(keys)])
	}); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	res.RegisterSeconds = time.Since(t0).Seconds()

	g.log.Info("connecting streams", "agents", n, "register_s", res.RegisterSeconds)
	t0 = time.Now()
	if err := g.parallel(setupCtx, n, func(ctx context.Context, i int) error {
		a := g.agents[i]
		if err := a.dial(ctx, g.hc, g.repOf(i).wsBase); err != nil {
			return err
		}
		go a.readLoop(g)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	for g.netmaps.Load() < int64(n) {
		if setupCtx.Err() != nil {
			return nil, fmt.Errorf("loadgen: %d of %d netmaps received: %w", g.netmaps.Load(), n, errTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.ConnectSeconds = time.Since(t0).Seconds()
	g.log.Info("streams up, waiting for the delta storm to settle", "connect_s", res.ConnectSeconds)
	if err := g.waitQuiet(ctx, time.Second, 5*time.Minute); err != nil {
		return nil, err
	}
	res.SettleSeconds = time.Since(t0).Seconds()
	g.measuring.Store(true)
	afterSetup, err := g.readProcs()
	if err != nil {
		return nil, err
	}
	time.Sleep(idleWindow)
	idle, err := g.readProcs()
	if err != nil {
		return nil, err
	}
	res.PerReplica = make([]ReplicaFigures, len(g.reps))
	for i := range g.reps {
		f := &res.PerReplica[i]
		f.SetupCPUSeconds = float64(afterSetup[i].cpuTicks-start[i].cpuTicks) / clockTicks
		f.IdleCPUPercent = 100 * float64(idle[i].cpuTicks-afterSetup[i].cpuTicks) / clockTicks / idleWindow.Seconds()
		f.RSSBytes = idle[i].rssBytes
	}
	// The headline figures are replica 0's (the only one without replicas).
	res.SetupCPUSeconds, res.IdleCPUPercent, res.RSSBytes = res.PerReplica[0].SetupCPUSeconds, res.PerReplica[0].IdleCPUPercent, res.PerReplica[0].RSSBytes
	for _, a := range g.agents[:n] {
		res.NetmapBytes = max(res.NetmapBytes, a.netmapBytes.Load())
	}

	if g.cfg.Policy {
		// A policy change: every agent gets a delta with its new filter.
		p := newProbe(n, -1, func(f []byte) bool { return bytes.Contains(f, []byte(`"filter":`)) })
		g.probe.Store(p)
		took, err := g.setPolicy(ctx, 1)
		if err != nil {
			return nil, err
		}
		res.PolicySetSeconds = took.Seconds()
		res.note(g.waitProbe(ctx, p, n), "policy change")
		res.PolicyChange = summarize(p.latencies())
		g.waitQuiet(ctx, 200*time.Millisecond, 30*time.Second)
		g.log.Info("policy change propagated", "command_s", took.Seconds(), "p99_ms", res.PolicyChange.P99*1000)
	}

	// Join: a new node registers; every agent must hear of it.
	probe := g.agents[n]
	marker := []byte(`"public_key":"` + probe.pub + `"`)
	p := newProbe(n, -1, func(f []byte) bool { return bytes.Contains(f, marker) })
	g.probe.Store(p)
	if err := probe.register(ctx, g.hc, g.reps[0].base, probeKey); err != nil {
		return nil, fmt.Errorf("loadgen: probe: %w", err)
	}
	res.note(g.waitProbe(ctx, p, n), "join")
	res.Join = summarize(p.latencies())
	res.JoinOther = summarize(p.latenciesOf(g.onOtherReplica))
	g.waitQuiet(ctx, 200*time.Millisecond, 30*time.Second)
	g.log.Info("join propagated", "p50_ms", res.Join.P50*1000, "p99_ms", res.Join.P99*1000)

	// Online then offline: the probe's stream comes and goes.
	on := newProbe(n, -1, func(f []byte) bool {
		if !bytes.Contains(f, idMarker(probe.nodeID)) {
			return false
		}
		nd, up, _ := deltaNode(f, probe.nodeID)
		return up && nd.Online
	})
	g.probe.Store(on)
	if err := probe.dial(ctx, g.hc, g.reps[0].wsBase); err != nil {
		return nil, fmt.Errorf("loadgen: probe: %w", err)
	}
	go probe.readLoop(g)
	res.note(g.waitProbe(ctx, on, n), "online")
	res.Online = summarize(on.latencies())
	res.OnlineOther = summarize(on.latenciesOf(g.onOtherReplica))
	g.waitQuiet(ctx, 200*time.Millisecond, 30*time.Second)
	off := newProbe(n, -1, func(f []byte) bool {
		if !bytes.Contains(f, idMarker(probe.nodeID)) {
			return false
		}
		nd, up, _ := deltaNode(f, probe.nodeID)
		return up && !nd.Online
	})
	g.probe.Store(off)
	probe.ws.CloseNow()
	res.note(g.waitProbe(ctx, off, n), "offline")
	res.Offline = summarize(off.latencies())
	res.OfflineOther = summarize(off.latenciesOf(g.onOtherReplica))
	g.log.Info("offline propagated", "p50_ms", res.Offline.P50*1000, "p99_ms", res.Offline.P99*1000)

	// Removal through the admin command, where this build has one.
	rm := newProbe(n, -1, func(f []byte) bool {
		if !bytes.Contains(f, []byte(`"remove":`)) {
			return false
		}
		_, _, removed := deltaNode(f, probe.nodeID)
		return removed
	})
	g.probe.Store(rm)
	// The server tells the agents before the command answers, so the clock
	// starts when the command is launched: the figure includes its process
	// start-up and admin-socket round trip, which RemovalCommandMs shows.
	took, msg, err := g.removeNode(ctx, probe.nodeID)
	switch {
	case err != nil:
		res.RemovalNote = "not measured: " + msg
	default:
		res.RemovalCommandMs = float64(took.Microseconds()) / 1000
		if err := g.waitProbe(ctx, rm, n); err != nil {
			res.RemovalNote = "removal did not reach the agents: " + err.Error()
		} else {
			res.Removal = summarize(rm.latencies())
			res.RemovalOther = summarize(rm.latenciesOf(g.onOtherReplica))
		}
	}
	g.probe.Store(nil)

	if m, err := g.scrape(ctx, g.reps[0]); err == nil {
		res.Coordinator = m
	}
	end, err := g.readProcs()
	if err != nil {
		return nil, err
	}
	for i := range g.reps {
		res.PerReplica[i].PeakRSSBytes = end[i].peakBytes
		res.PerReplica[i].TotalCPUSeconds = float64(end[i].cpuTicks-start[i].cpuTicks) / clockTicks
	}
	res.PeakRSSBytes, res.TotalCPUSeconds = res.PerReplica[0].PeakRSSBytes, res.PerReplica[0].TotalCPUSeconds
	res.LostStreams = g.lost.Load()

	// Reconnect storms last: they restart the coordinator. With replicas,
	// replica 0 restarts (its agents come back to it), then dies for good
	// (its agents move to replica 1).
	storms := []Storm{{Resume: false}, {Resume: true}}
	if len(g.reps) > 1 {
		storms = []Storm{{Resume: true}, {Resume: true, FailOver: true}}
	}
	for _, s := range storms {
		g.log.Info("reconnect storm", "resume", s.Resume, "fail_over", s.FailOver)
		s, err := g.storm(ctx, n, s.Resume, s.FailOver)
		if err != nil {
			return nil, err
		}
		g.log.Info("storm over", "resume", s.Resume, "fail_over", s.FailOver, "agents", s.Agents, "current_s", s.CurrentSeconds, "resumes", s.Resumes)
		res.Storms = append(res.Storms, s)
	}
	return res, nil
}

// onOtherReplica tells whether agent i uses another replica than the one
// changes are made on (always false without replicas).
func (g *run) onOtherReplica(i int) bool { return g.repOf(i) != g.reps[0] }

// readProcs samples every replica's process.
func (g *run) readProcs() ([]procSample, error) {
	out := make([]procSample, len(g.reps))
	for i, r := range g.reps {
		var err error
		if out[i], err = readProc(r.cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// removeNode runs the admin command that removes a node and returns how
// long it took from launch to answer, or a reason when this build has no
// such command or it failed.
func (g *run) removeNode(ctx context.Context, id uint64) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, g.cfg.Coordinator, "nodes", "remove", "--state", g.reps[0].dir,
		strconv.FormatUint(id, 10))
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.IndexByte(msg, '\n'); i > 0 {
			msg = msg[:i]
		}
		return 0, fmt.Sprintf("'meshvpn-coordinator nodes remove' failed (%v): %s", err, msg), err
	}
	return time.Since(t0), "", nil
}

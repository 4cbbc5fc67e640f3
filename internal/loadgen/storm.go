package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
)

// stormDialTries bounds one agent's dials in a storm.
const stormDialTries = 6

// Reconnect storm: the coordinator is SIGKILLed with N agents connected
// and started again on the same store (a crash, or a replica restart); every
// agent reconnects at once. Timed twice: agents that name the netmap version
// they hold (a resume: only what changed) and agents that do not (a full
// netmap each, as before netmap versions).

// Storm is one reconnect storm's figures.
type Storm struct {
	// Resume says whether agents named their netmap version.
	Resume bool `json:"resume"`
	// FailOver: the replica stays dead and its agents move to another.
	FailOver bool `json:"fail_over,omitempty"`
	// Agents is how many reconnected (with replicas, those of the replica
	// that stopped).
	Agents int `json:"agents"`
	// CurrentSeconds: from the restarted coordinator accepting until every
	// agent had its first frame (netmap or resume); SettleSeconds until the
	// last frame of the storm arrived.
	CurrentSeconds float64 `json:"current_s"`
	SettleSeconds  float64 `json:"settle_s"`
	// Resumes counts agents answered with a resume, not a netmap.
	Resumes int `json:"resumes"`
	// BytesPerAgent is what an agent received in the storm, on average.
	BytesPerAgent float64 `json:"bytes_per_agent"`
	// Lost counts streams the coordinator ended during the storm; each
	// agent dialled again, as an agent would (see stormRedial for the
	// storm of full netmaps).
	Lost int `json:"lost,omitempty"`
	// DialRetries counts stream dials that failed and were tried again
	// after a backoff, as an agent does; DialError is the first failure.
	DialRetries int    `json:"dial_retries,omitempty"`
	DialError   string `json:"dial_error,omitempty"`
	// Misses are the coordinator's reasons for answering a named version
	// with a full netmap (meshvpn_coordinator_resume_misses_total).
	Misses map[string]float64 `json:"resume_misses,omitempty"`
	// Stale counts agents that got a full netmap although they named a
	// version: those holding the version most agents held, and the others.
	StaleCommon int    `json:"stale_common,omitempty"`
	StaleOther  int    `json:"stale_other,omitempty"`
	Note        string `json:"note,omitempty"`
}

// nvMarker starts a frame's netmap version (see control.Message).
var nvMarker = []byte(`"nv":"`)

// frameVersion cuts the netmap version out of the first 200 bytes of a
// frame (the coordinator writes it before the netmap); "" if none.
func frameVersion(frame []byte) string {
	head := frame[:min(len(frame), 200)]
	i := bytes.Index(head, nvMarker)
	if i < 0 {
		return ""
	}
	rest := head[i+len(nvMarker):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// storm kills the coordinator (replica 0), starts it again on the same
// state, and times its agents reconnecting; with failOver it stays dead and
// they reconnect to replica 1.
func (g *run) storm(ctx context.Context, n int, resume, failOver bool) (Storm, error) {
	st := Storm{Resume: resume, FailOver: failOver}
	g.measuring.Store(false)
	victim, target := g.reps[0], g.reps[0]
	if failOver {
		target = g.reps[1]
	}
	g.kill(victim)
	var movers []*simAgent
	for _, a := range g.agents[:n] {
		a.inStorm.Store(false)
		if g.repOf(a.index) == victim {
			movers = append(movers, a)
		}
	}
	for _, a := range movers {
		a.gen.Add(1)
		a.ws.CloseNow()
		a.stormAt.Store(0)
		a.stormBytes.Store(0)
		a.resumed.Store(false)
		a.inStorm.Store(true)
	}
	st.Agents = len(movers)
	g.stormFirst.Store(0)
	g.stormLost.Store(0)
	g.stormResume.Store(resume)
	g.stormTarget.Store(target)
	g.storming.Store(true)
	defer g.storming.Store(false)
	if !failOver {
		if err := g.startCoordinator(ctx, victim); err != nil {
			return st, err
		}
	}
	t0 := time.Now()
	workers := g.cfg.Workers * 4
	saved := g.cfg.Workers
	g.cfg.Workers = workers
	sinces := make([]string, len(movers))
	var retries atomic.Int64
	var firstErr atomic.Value
	err := g.parallel(ctx, len(movers), func(ctx context.Context, i int) error {
		a := movers[i]
		if resume {
			sinces[i], _ = a.nv.Load().(string)
		}
		if err := g.stormDial(ctx, a, target, sinces[i], &retries, &firstErr); err != nil {
			return err
		}
		go a.readLoop(g)
		return nil
	})
	g.cfg.Workers = saved
	st.DialRetries = int(retries.Load())
	defer func() { st.Lost = int(g.stormLost.Load()) }()
	st.DialError, _ = firstErr.Load().(string)
	if err != nil {
		return st, fmt.Errorf("loadgen: storm: %w", err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for g.stormFirst.Load() < int64(len(movers)) {
		if time.Now().After(deadline) {
			return st, fmt.Errorf("loadgen: storm: %d of %d agents current: %w", g.stormFirst.Load(), len(movers), errTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st.CurrentSeconds = time.Since(t0).Seconds()
	if err := g.waitQuiet(ctx, time.Second, 5*time.Minute); err != nil {
		st.Note = err.Error()
	}
	st.SettleSeconds = (time.Since(t0) - time.Second).Seconds()
	var total int64
	for _, a := range movers {
		total += a.stormBytes.Load()
		if a.resumed.Load() {
			st.Resumes++
		}
	}
	st.BytesPerAgent = float64(total) / float64(max(len(movers), 1))
	if resume {
		st.StaleCommon, st.StaleOther = staleCounts(movers, sinces)
		if m, err := g.scrape(ctx, target); err == nil {
			st.Misses = missesOf(m)
		}
	}
	g.measuring.Store(true)
	return st, nil
}

// staleCounts splits the agents that named a version and still got a full
// netmap: those that held the version most agents held (the coordinator
// should have resumed them) and those that held another.
func staleCounts(movers []*simAgent, sinces []string) (common, other int) {
	count := map[string]int{}
	for _, v := range sinces {
		count[v]++
	}
	top := ""
	for v, c := range count {
		if c > count[top] {
			top = v
		}
	}
	for i, a := range movers {
		switch {
		case sinces[i] == "" || a.resumed.Load():
		case sinces[i] == top:
			common++
		default:
			other++
		}
	}
	return common, other
}

// missesOf picks the resume-miss counters out of a scrape, by reason.
func missesOf(m map[string]float64) map[string]float64 {
	const name = "meshvpn_coordinator_resume_misses_total"
	out := map[string]float64{}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, name+`{reason="`); ok {
			out[strings.TrimSuffix(rest, `"}`)] = v
		}
	}
	return out
}

// stormDial opens a's stream naming since. A dial the coordinator drops is
// tried again after an agent's backoff, and counted in retries, so the figures say so.
func (g *run) stormDial(ctx context.Context, a *simAgent, target *replica, since string, retries *atomic.Int64, firstErr *atomic.Value) error {
	for try := 1; ; try++ {
		err := a.dialSince(ctx, g.hc, target.wsBase, since)
		if err == nil {
			return nil
		}
		if try == stormDialTries {
			return err
		}
		retries.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(agentBackoff(try - 1)):
		}
	}
}

// agentBackoff is an agent's wait before its nth retry in a row
// (agent/controlclient.go): 0.5 s doubling up to 30 s, ±25 % jitter.
func agentBackoff(n int) time.Duration {
	d := min(500*time.Millisecond<<min(n, 6), 30*time.Second)
	return d*3/4 + rand.N(d/2)
}

// stormRedial dials again for an agent whose stream the coordinator ended
// during a storm, after the agent's backoff, naming the version it
// holds when the storm is one of resumes. Left uncounted and unreconnected,
// such agents came to the next storm holding an old version, and their
// full netmaps were charged to the restart.
//
// In a storm of full netmaps only agents still waiting for their first
// frame dial again: each dial there is another 2 MB netmap, whose load ends
// more streams (ping timeouts), and the storm became a meltdown of ten
// minutes instead of a measurement of the behaviour before netmap versions.
// The others are counted and come to the next storm holding the version of
// their netmap.
func (g *run) stormRedial(a *simAgent) {
	g.stormLost.Add(1)
	if !g.stormResume.Load() && a.stormAt.Load() != 0 {
		return
	}
	time.Sleep(agentBackoff(int(a.losses.Add(1) - 1)))
	target, _ := g.stormTarget.Load().(*replica)
	if target == nil || !g.storming.Load() {
		return
	}
	since := ""
	if g.stormResume.Load() {
		since, _ = a.nv.Load().(string)
	}
	var retries atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := g.stormDial(ctx, a, target, since, &retries, &firstErr); err != nil {
		g.log.Warn("storm: agent could not dial again", "agent", a.index, "err", err)
		return
	}
	go a.readLoop(g)
}

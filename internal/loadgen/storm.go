package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

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
	Note          string  `json:"note,omitempty"`
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
		a.ws.CloseNow()
		a.stormAt.Store(0)
		a.stormBytes.Store(0)
		a.resumed.Store(false)
		a.inStorm.Store(true)
	}
	st.Agents = len(movers)
	g.stormFirst.Store(0)
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
	err := g.parallel(ctx, len(movers), func(ctx context.Context, i int) error {
		a := movers[i]
		since := ""
		if resume {
			since, _ = a.nv.Load().(string)
		}
		if err := a.dialSince(ctx, g.hc, target.wsBase, since); err != nil {
			return err
		}
		go a.readLoop(g)
		return nil
	})
	g.cfg.Workers = saved
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
	g.measuring.Store(true)
	return st, nil
}

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
)

// meshStatusTimeout bounds one `meshvpn status` in make bench-mesh.
const meshStatusTimeout = 5 * time.Second

// meshStuckAfter is how many status calls in a row an agent must have
// missed, at the end of the run, to be called stuck. Slow answers during
// the start burst on a busy machine are common and are only counted.
const meshStuckAfter = 3

// meshPoller polls the agents' status for make bench-mesh and counts the
// calls that got no answer within meshStatusTimeout.
type meshPoller struct {
	agents []*meshlab.Agent
	mu     sync.Mutex
	misses map[*meshlab.Agent]int // in a row, up to the last call
	total  map[*meshlab.Agent]int
}

func newMeshPoller(agents []*meshlab.Agent) *meshPoller {
	return &meshPoller{agents: agents, misses: map[*meshlab.Agent]int{}, total: map[*meshlab.Agent]int{}}
}

// stuck tells whether a missed its last meshStuckAfter status calls.
func (m *meshPoller) stuck(a *meshlab.Agent) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.misses[a] >= meshStuckAfter
}

// missed returns the status calls that timed out, and on how many agents.
func (m *meshPoller) missed() (calls, agents int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.total {
		calls += n
		if n > 0 {
			agents++
		}
	}
	return calls, agents
}

// statusAll asks every running agent for its status, all at once. An
// agent that did not answer has no entry.
func (m *meshPoller) statusAll(ctx context.Context) map[*meshlab.Agent]*meshlab.Status {
	out := map[*meshlab.Agent]*meshlab.Status{}
	var wg sync.WaitGroup
	for _, a := range m.agents {
		if a.Running() != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, meshStatusTimeout)
			st, err := a.Status(cctx)
			cancel()
			m.mu.Lock()
			defer m.mu.Unlock()
			switch {
			case err == nil:
				out[a], m.misses[a] = st, 0
			case ctx.Err() == nil:
				m.misses[a]++
				m.total[a]++
			}
		}()
	}
	wg.Wait()
	return out
}

// overlayIPs polls until every running agent has its overlay address, or
// for at most half of ctx's time, and returns the addresses seen.
func (m *meshPoller) overlayIPs(ctx context.Context) map[*meshlab.Agent]string {
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
		defer cancel()
	}
	ips := map[*meshlab.Agent]string{}
	for ctx.Err() == nil {
		for a, st := range m.statusAll(ctx) {
			if st.Self.IP != "" {
				ips[a] = st.Self.IP
			}
		}
		waiting := 0
		for _, a := range m.agents {
			if ips[a] == "" && a.Running() == nil {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return ips
}

// observe polls once and keeps each pair's latest status lines.
func (m *meshPoller) observe(ctx context.Context, pairs []*meshPair) {
	sts := m.statusAll(ctx)
	for _, p := range pairs {
		if st := sts[p.a]; st != nil {
			p.ab = st.Peer(p.b.Name)
		}
		if st := sts[p.b]; st != nil {
			p.ba = st.Peer(p.a.Name)
		}
	}
}

// stuckNames lists the agents that missed their last meshStuckAfter
// status calls.
func (m *meshPoller) stuckNames() []string {
	var names []string
	for _, a := range m.agents {
		if m.stuck(a) {
			names = append(names, a.Name)
		}
	}
	return names
}

// dumpStuck sends SIGQUIT to every stuck agent still running, so that the
// Go runtime writes its goroutines to the agent's log, and keeps that log
// next to $BENCH_MESH_OUT as bench-mesh-stuck-NAME.log (the lab dir goes
// away with the lab).
func dumpStuck(b testing.TB, m *meshPoller) {
	out := os.Getenv("BENCH_MESH_OUT")
	for _, a := range m.agents {
		if !m.stuck(a) || a.Running() != nil {
			continue
		}
		a.Proc.Signal(syscall.SIGQUIT)
		a.Proc.Wait(5 * time.Second)
		if out == "" {
			b.Logf("agent %s was stuck; its log with a goroutine dump: %s (removed with the lab)", a.Name, a.Proc.LogPath)
			continue
		}
		keep := filepath.Join(filepath.Dir(out), "bench-mesh-stuck-"+a.Name+".log")
		if err := os.WriteFile(keep, []byte(a.Proc.Log()), 0o644); err != nil {
			b.Logf("keep %s's log: %v", a.Name, err)
			continue
		}
		b.Logf("agent %s was stuck (its last %d status calls got no answer in %v); its log with a goroutine dump: %s", a.Name, meshStuckAfter, meshStatusTimeout, keep)
	}
}

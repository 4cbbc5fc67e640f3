// Package loadgen measures one coordinator under N simulated agents: it
// starts the real meshvpn-coordinator binary on loopback, registers N agents
// over the HTTP API, holds their WebSocket streams, and times how long one
// change takes to reach all of them. The agents have no TUN and no
// WireGuard; they only read their streams.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// Config says what to measure.
type Config struct {
	// Coordinator is the meshvpn-coordinator binary.
	Coordinator string
	// N is the number of simulated agents.
	N int
	// Workers is how many registrations and stream dials run at once.
	Workers int
	// ProbeTimeout bounds the wait for one change to reach every agent.
	ProbeTimeout time.Duration
	// SetupTimeout bounds registering and connecting all N agents.
	SetupTimeout time.Duration
	// Policy installs an access policy of 50 groups and 500 rules (see
	// policy.go) before the agents join, and times a policy change.
	Policy bool
	// Replicas is how many coordinators serve the agents (default 1);
	// more than one needs Store "postgres". Agent i uses replica i mod
	// Replicas; changes are made on replica 0.
	Replicas int
	// First, with replicas, puts agents [0, First) on replica 0 (the one
	// restarted in the storms) and the others on the other replicas; 0
	// spreads all evenly.
	First int
	// Store is "" (SQLite in the state directory) or "postgres": a
	// throwaway PostgreSQL cluster on loopback (see internal/pgtest).
	Store string
	// Log receives progress; nil is silent.
	Log *slog.Logger
}

// replica is one coordinator process of the run.
type replica struct {
	base    string
	wsBase  string
	metrics string
	// dir is its --state.
	dir    string
	cmd    *exec.Cmd
	exited chan error
}

// run is one measurement in progress.
type run struct {
	cfg   Config
	log   *slog.Logger
	state string
	reps  []*replica
	// storeURL is the PostgreSQL database, "" for SQLite.
	storeURL  string
	hc        *http.Client
	agents    []*simAgent
	probe     atomic.Pointer[probe]
	lastFrame atomic.Int64
	netmaps   atomic.Int64
	// measuring is set once setup is done; lost counts agent streams that
	// ended after that (the coordinator dropped them).
	measuring atomic.Bool
	lost      atomic.Int64
	// storming is set while a reconnect storm is timed; stormFirst counts
	// agents that had their first frame in it (see storm.go).
	storming   atomic.Bool
	stormFirst atomic.Int64
	// stormLost counts streams the coordinator ended during a storm; those
	// agents dial stormTarget again (naming their version if stormResume).
	stormLost   atomic.Int64
	stormResume atomic.Bool
	stormTarget atomic.Value
}

// Run measures one coordinator with cfg.N agents and stops it again.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("loadgen: N must be at least 1, got %d", cfg.N)
	}
	if cfg.Workers < 1 {
		cfg.Workers = 32
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 30 * time.Second
	}
	if cfg.SetupTimeout <= 0 {
		cfg.SetupTimeout = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Replicas = max(cfg.Replicas, 1)
	switch {
	case cfg.Store != "" && cfg.Store != "postgres":
		return nil, fmt.Errorf("loadgen: store %q: want postgres or nothing (SQLite)", cfg.Store)
	case cfg.First < 0 || cfg.First > cfg.N:
		return nil, fmt.Errorf("loadgen: first %d: want 0..N (%d)", cfg.First, cfg.N)
	case cfg.Replicas > 1 && cfg.Store == "":
		return nil, fmt.Errorf("loadgen: %d replicas need the postgres store", cfg.Replicas)
	}
	// Our N streams, the coordinator's N, plus slack; the coordinator
	// inherits the limit.
	if lim, err := raiseFileLimit(uint64(cfg.N)*2 + 1024); err != nil {
		return nil, err
	} else if lim < uint64(cfg.N)+256 {
		return nil, fmt.Errorf("loadgen: file limit %d too low for %d streams", lim, cfg.N)
	}
	state, err := os.MkdirTemp("", "meshvpn-loadgen-")
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	defer os.RemoveAll(state)
	g := &run{cfg: cfg, log: cfg.Log, state: state}
	if cfg.Store == "postgres" {
		cluster, err := pgtest.StartCluster("127.0.0.1", nil, nil)
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		defer cluster.Stop()
		if g.storeURL, err = cluster.CreateDB(); err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
	}
	for i := range cfg.Replicas {
		g.reps = append(g.reps, &replica{dir: filepath.Join(state, fmt.Sprintf("coord%d", i))})
	}
	g.hc = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        cfg.Workers,
			MaxIdleConnsPerHost: cfg.Workers,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	for _, r := range g.reps {
		defer g.stopCoordinator(r)
		if err := g.startCoordinator(ctx, r); err != nil {
			return nil, err
		}
	}
	defer g.closeStreams()
	res, err := g.measure(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w\ncoordinator log tail:\n%s", err, g.logTail(g.reps[0]))
	}
	return res, nil
}

// repOf is the replica agent i uses: i mod replicas, or with First the
// first First agents on replica 0 and the rest spread over the others.
func (g *run) repOf(i int) *replica {
	if f := g.cfg.First; f > 0 && len(g.reps) > 1 {
		if i < f {
			return g.reps[0]
		}
		return g.reps[1+(i-f)%(len(g.reps)-1)]
	}
	return g.reps[i%len(g.reps)]
}

// storeArgs name the store for serve and the admin commands.
func (g *run) storeArgs() []string {
	if g.storeURL == "" {
		return nil
	}
	return []string{"--store", g.storeURL}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (g *run) startCoordinator(ctx context.Context, r *replica) error {
	api, err := freePort()
	if err != nil {
		return err
	}
	met, err := freePort()
	if err != nil {
		return err
	}
	r.base, r.wsBase, r.metrics = "http://"+api, "ws://"+api, "http://"+met+metrics.Path
	logf, err := os.OpenFile(r.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	// Everything on loopback: no STUN (agents here never ask), and the
	// embedded TURN server kept on (each agent is minted relay credentials,
	// as in a real mesh) but bound to 127.0.0.1 on a free port.
	r.cmd = exec.Command(g.cfg.Coordinator, append([]string{"serve", "--listen", api, "--stun-listen", "",
		"--turn-listen", "127.0.0.1:0", "--public-host", "127.0.0.1",
		"--metrics-listen", met, "--state", r.dir, "--log-level", "warn",
		// All N agents come from one address and join with one key at
		// full speed: the per-source and per-key limits are off.
		"--auth-fail-burst", "-1", "--join-burst", "-1", "--max-conns-per-ip", "-1"}, g.storeArgs()...)...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("loadgen: start coordinator: %w", err)
	}
	exited := make(chan error, 1)
	r.exited = exited
	cmd := r.cmd
	go func() {
		exited <- cmd.Wait()
		logf.Close()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := g.scrape(ctx, r); err == nil {
			return nil
		}
		select {
		case err := <-r.exited:
			r.exited <- err
			return fmt.Errorf("loadgen: coordinator exited at start: %v (log: %s)", err, g.logTail(r))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadgen: coordinator not answering after 30s (log: %s)", g.logTail(r))
		}
	}
}

func (g *run) logTail(r *replica) string {
	b, _ := os.ReadFile(r.dir + ".log")
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// stopCoordinator asks for a clean shutdown and kills the process if that
// takes too long; it only ever signals the process it started.
func (g *run) stopCoordinator(r *replica) {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case err := <-r.exited: // already ended (a storm killed it)
		r.exited <- err
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
}

// kill SIGKILLs replica r and waits for it to end.
func (g *run) kill(r *replica) {
	r.cmd.Process.Kill()
	err := <-r.exited
	r.exited <- err
}

func (g *run) closeStreams() {
	for _, a := range g.agents {
		if a.ws != nil {
			a.ws.CloseNow()
		}
	}
}

func (g *run) scrape(ctx context.Context, r *replica) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.metrics, nil)
	if err != nil {
		return nil, err
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape: %s", resp.Status)
	}
	return metrics.Parse(resp.Body)
}

// createKey makes a reusable auth key with the admin command, as an
// operator would.
func (g *run) createKey(ctx context.Context, extra ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, g.cfg.Coordinator, append(append([]string{"authkey", "create", "--reusable", "--expiry", "0",
		"--state", g.reps[0].dir}, g.storeArgs()...), extra...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("loadgen: authkey create: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	lines := strings.Fields(out.String())
	if len(lines) == 0 {
		return "", errors.New("loadgen: authkey create printed no key")
	}
	return lines[len(lines)-1], nil
}

// parallel runs fn for agents [0, n) on the configured number of workers
// and returns the first error.
func (g *run) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range min(g.cfg.Workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// waitQuiet waits until no frame has arrived for quiet, so a probe is not
// timed behind the tail of the setup storm.
func (g *run) waitQuiet(ctx context.Context, quiet, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Since(time.Unix(0, g.lastFrame.Load())) < quiet {
		if time.Now().After(deadline) {
			return fmt.Errorf("loadgen: streams not quiet after %v: %w", limit, errTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// waitProbe waits until want agents have seen p.
func (g *run) waitProbe(ctx context.Context, p *probe, want int) error {
	deadline := time.Now().Add(g.cfg.ProbeTimeout)
	for p.seen.Load() < int64(want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents saw the change within %v: %w", p.seen.Load(), want, g.cfg.ProbeTimeout, errTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

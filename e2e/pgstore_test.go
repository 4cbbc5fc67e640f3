package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// pgHostIP is the lab's PostgreSQL server, a public host beside the
// coordinator.
const pgHostIP = "203.0.113.30"

// TestPostgresStore runs the coordinator with --store on a PostgreSQL
// server in the lab (a throwaway cluster on its own lab host): two agents
// behind NATs join and ping each other; the nodes, the coordinator key
// and the TURN secret are in the database, not in --state; after a
// restart the agents come back with the same addresses.
func TestPostgresStore(t *testing.T) {
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		pgHost, err := lab.AddPublicHost("pg", pgHostIP)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		cluster := pgtest.Start(t, pgHostIP, []string{meshlab.CoordinatorIP + "/32"}, func(argv []string) *exec.Cmd {
			// Not ctx: the cluster is stopped after the test's context ends.
			return pgHost.Command(context.WithoutCancel(ctx), argv[0], argv[1:]...)
		})
		t.Logf("PostgreSQL up at %s:%d in %v", cluster.Host, cluster.Port, time.Since(start).Round(time.Millisecond))
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Store: cluster.URL("postgres")})
	})
	ctx := t.Context()
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.FullCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.PortRestricted)
	both := []*meshlab.Agent{alpha, beta}
	startOnline(t, authKey(t, coord, true), both...)
	ipAlpha, ipBeta := overlayIP(t, alpha), overlayIP(t, beta)
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("alpha -> beta: %v\n%s", err, out)
	}
	if out, err := pingUntil(ctx, beta, ipAlpha, 30*time.Second); err != nil {
		t.Fatalf("beta -> alpha: %v\n%s", err, out)
	}

	nodes, err := coord.Nodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes in the PostgreSQL store: %+v, %v", nodes, err)
	}
	// --state keeps only local files: no database, key or TURN secret.
	for _, f := range []string{coordinator.DBFile, "coordinator.key", "turn-secret"} {
		if _, err := os.Stat(filepath.Join(coord.StateDir, f)); !os.IsNotExist(err) {
			t.Errorf("%s is in --state with --store postgres (stat: %v)", f, err)
		}
	}

	// A restarted coordinator finds everything in the database: the agents
	// reconnect with their credentials, keep their addresses, and their
	// proofs verify against the same coordinator key.
	coord.Proc.Signal(syscall.SIGKILL)
	coord.Proc.Wait(5 * time.Second)
	if err := coord.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got := overlayIP(t, alpha); got != ipAlpha {
		t.Errorf("alpha's address after restart %s, want %s", got, ipAlpha)
	}
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("alpha -> beta after restart: %v\n%s", err, out)
	}
	gamma := addSiteAgent(t, lab, coord, "gamma", natlab.RestrictedCone)
	startOnline(t, authKey(t, coord, false), gamma)
	if out, err := pingUntil(ctx, gamma, ipAlpha, 30*time.Second); err != nil {
		t.Fatalf("gamma (joined after restart) -> alpha: %v\n%s", err, out)
	}
}

package e2e

import (
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRestartRejoin stops an agent with SIGTERM and starts it again from
// its state dir without an auth key: same overlay address, peer reachable.
func TestRestartRejoin(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.FullCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.PortRestricted)
	for _, a := range []*meshlab.Agent{alpha, beta} {
		// Single-use keys: the restart below must not need one.
		if err := a.Up(ctx, authKey(t, coord, false), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	both := []*meshlab.Agent{alpha, beta}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ipAlpha, ipBeta := overlayIP(t, alpha), overlayIP(t, beta)
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("ping before restart: %v\n%s", err, out)
	}

	if err := alpha.Stop(15 * time.Second); err != nil {
		t.Fatalf("alpha did not exit cleanly on SIGTERM: %v", err)
	}
	if code := alpha.Proc.ExitCode(); code != 0 {
		t.Fatalf("alpha exited with %d on SIGTERM, want 0", code)
	}
	if alpha.HasTUN(ctx) {
		t.Fatalf("TUN %s still exists after alpha stopped", meshlab.TUN)
	}

	start := time.Now()
	if err := alpha.Up(ctx, "", 30*time.Second); err != nil {
		t.Fatalf("restart without auth key: %v", err)
	}
	if got := overlayIP(t, alpha); got != ipAlpha {
		t.Errorf("overlay IP after restart = %s, want %s", got, ipAlpha)
	}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("alpha -> beta after restart: %v\n%s", err, out)
	}
	if out, err := pingUntil(ctx, beta, ipAlpha, 30*time.Second); err != nil {
		t.Fatalf("beta -> alpha after restart: %v\n%s", err, out)
	}
	t.Logf("alpha rejoined as %s and reached beta %v after restart", ipAlpha, time.Since(start).Round(time.Millisecond))
}

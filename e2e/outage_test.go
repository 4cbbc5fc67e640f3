package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestCoordinatorOutage kills the coordinator (SIGKILL, as a crash would)
// while two agents have a direct tunnel, and checks that the tunnel keeps
// carrying traffic with no loss while the coordinator is away, that the
// agents notice and reconnect when it is back, and that a node joining after
// the restart reaches the old ones.
func TestCoordinatorOutage(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	// A pair that needs a peer-reflexive candidate: the hard direct case.
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.RestrictedCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.Symmetric)
	key := authKey(t, coord, true)
	for _, a := range []*meshlab.Agent{alpha, beta} {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{alpha, beta}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ipBeta := overlayIP(t, beta)
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("ping before the outage: %v\n%s", err, out)
	}

	coord.Proc.Signal(syscall.SIGKILL)
	if err := coord.Proc.Wait(10 * time.Second); err == nil && !coord.Proc.Exited() {
		t.Fatal("coordinator did not die")
	}
	for _, a := range []*meshlab.Agent{alpha, beta} {
		if err := waitCoordinator(ctx, a, false, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Longer than ICE's disconnect (5 s) and failure (10 s) timeouts, so a
	// session that depended on the coordinator would have been torn down.
	out, err := alpha.Host.Run(ctx, "ping", "-n", "-c", "30", "-i", "0.5", "-W", "1", ipBeta)
	if err != nil {
		t.Fatalf("overlay ping during the coordinator outage lost packets: %v\n%s", err, out)
	}
	t.Logf("during the outage: %s", lastLine(out, "packets transmitted"))
	st, err := alpha.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer(beta.Name); p == nil || p.Path != "direct" {
		t.Fatalf("path to beta during the outage: %+v, want direct", p)
	}

	if err := coord.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*meshlab.Agent{alpha, beta} {
		if err := waitCoordinator(ctx, a, true, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{alpha, beta}, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	gamma := addSiteAgent(t, lab, coord, "gamma", natlab.FullCone)
	if err := gamma.Up(ctx, key, 30*time.Second); err != nil {
		t.Fatalf("new node after the restart: %v", err)
	}
	all := []*meshlab.Agent{alpha, beta, gamma}
	if err := meshlab.WaitOnline(ctx, all, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, old := range []*meshlab.Agent{alpha, beta} {
		if out, err := pingUntil(ctx, gamma, overlayIP(t, old), 30*time.Second); err != nil {
			t.Fatalf("gamma -> %s after the restart: %v\n%s", old.Name, err, out)
		}
	}
}

// waitCoordinator polls a's status until its control stream is up (or down).
func waitCoordinator(ctx context.Context, a *meshlab.Agent, connected bool, timeout time.Duration) error {
	return natlab.Poll(ctx, timeout, 250*time.Millisecond, func() error {
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		if st.Coordinator.Connected != connected {
			return fmt.Errorf("%s: coordinator connected=%v, want %v", a.Name, st.Coordinator.Connected, connected)
		}
		return nil
	})
}

// lastLine returns the last line of out that contains substr.
func lastLine(out, substr string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

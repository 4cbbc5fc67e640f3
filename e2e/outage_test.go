package e2e

import (
	"context"
	"errors"
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
	if err := coord.Proc.Wait(10 * time.Second); errors.Is(err, natlab.ErrTimeout) || !coord.Proc.Exited() {
		t.Fatalf("coordinator did not die: %v", err)
	}
	// The relay ran inside it: there is nothing to fall back to now.
	if out, err := coord.Host.Run(ctx, "ss", "-Hlun"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("UDP sockets still open on the coordinator's host after the kill (err %v):\n%s", err, out)
	}
	for _, a := range []*meshlab.Agent{alpha, beta} {
		if err := waitCoordinator(ctx, a, false, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Longer than ICE's disconnect (3 s) and failure (10 s) timeouts, so a
	// session that depended on the coordinator would have been torn down.
	// Every echo must come back, and the packets must be seen leaving for
	// beta's public address and coming back from it: the direct path.
	flow := countFlow(t, alpha.Host.Site.Router, wanAddr(beta.Host))
	rx0, tx0 := wgCounters(t, alpha, beta.Name)
	const echoes, allowedLoss = 30, 0
	res, err := pingCount(ctx, alpha, ipBeta, echoes, "0.5")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("during the outage: %s", lastLine(res.Out, "packets transmitted"))
	if res.Sent != echoes || res.Received < echoes-allowedLoss {
		t.Fatalf("overlay ping during the coordinator outage: %d of %d replies, allowed loss %d\n%s", res.Received, res.Sent, allowedLoss, res.Out)
	}
	out, in, err := flow.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rx1, tx1 := wgCounters(t, alpha, beta.Name)
	t.Logf("alpha's router: %d WireGuard data messages to beta's address, %d from it; alpha's WireGuard: +%d bytes out, +%d in", out, in, tx1-tx0, rx1-rx0)
	if out < echoes || in < echoes {
		t.Errorf("direct flow alpha <-> %s carried %d packets out, %d in; want at least the %d echoes each way", wanAddr(beta.Host), out, in, echoes)
	}
	if tx1-tx0 < echoes*icmpBytes || rx1-rx0 < echoes*icmpBytes {
		t.Errorf("WireGuard counters for beta grew by %d out, %d in; want at least %d each way", tx1-tx0, rx1-rx0, echoes*icmpBytes)
	}
	p := peerStatus(t, alpha, beta.Name)
	if p.Path != "direct" || p.Reason != "" || endpointHost(p.Endpoint) != wanAddr(beta.Host).String() {
		t.Fatalf("path to beta during the outage: %s (%s) at %s, want direct at %s", p.Path, p.Reason, p.Endpoint, wanAddr(beta.Host))
	}
	if rx, err := time.Parse(time.RFC3339, p.LastRx); err != nil || time.Since(rx) > 5*time.Second {
		t.Errorf("last packet from beta at %q, want within 5 s (err %v)", p.LastRx, err)
	}

	// With the relay gone, cut the direct path too: nothing works now, and
	// status must say so instead of "direct" from the last handshake.
	if p := checkSilentPath(t, alpha, beta, ipBeta); !strings.HasPrefix(p.Reason, "coordinator unreachable") {
		t.Errorf("no path while the coordinator is down: reason %q, want it to say the coordinator is unreachable", p.Reason)
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
	// The coordinator is back to signal new sessions: alpha and beta find
	// their direct path again.
	if _, err := meshlab.WaitPath(ctx, alpha, beta.Name, "direct", 40*time.Second); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if res, err := pingCount(ctx, alpha, ipBeta, 10, "0.2"); err != nil || res.Received != res.Sent {
		t.Fatalf("alpha -> beta after the restart: %d of %d replies (allowed loss 0): %v\n%s", res.Received, res.Sent, err, res.Out)
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

// checkSilentPath cuts every path from a to b (a's router drops UDP to
// b's public address; the relay must be dead already) while a keeps
// sending, and checks that a's status goes from "direct" to "direct (no
// answer for N s)" and then "none" on README's schedule, then restores it.
func checkSilentPath(t *testing.T, a, b *meshlab.Agent, ipB string) *meshlab.PeerStatus {
	ctx := t.Context()
	pinger, err := a.Host.Start("ping", "-n", "-i", "0.5", "-W", "1", "-c", "120", ipB)
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop(2 * time.Second)
	undo, err := cutDirect(ctx, a.Host.Site.Router, wanAddr(b.Host).String())
	if err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	defer undo()
	// ICE gives up on consent after 3 s; then 3 s more unanswered (plus a
	// second's sampling) before "no answer", and 15 s before "none".
	p, err := meshlab.WaitPeer(ctx, a, b.Name, 3*time.Second+3*time.Second+1*time.Second+3*time.Second, func(p *meshlab.PeerStatus) error {
		if !strings.HasPrefix(p.Reason, "no answer for ") && p.Path != "none" {
			return fmt.Errorf("path %s (%s)", p.Path, p.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s -> %s with every path cut: status never said the peer does not answer: %v", a.Name, b.Name, err)
	}
	t.Logf("%v after the cut: %s (%s) last_rx %s", time.Since(cutAt).Round(100*time.Millisecond), p.Path, p.Reason, p.LastRx)
	p, err = meshlab.WaitPeer(ctx, a, b.Name, 15*time.Second+1*time.Second+4*time.Second, func(p *meshlab.PeerStatus) error {
		if p.Path != "none" {
			return fmt.Errorf("path %s (%s)", p.Path, p.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s -> %s with every path cut: %v, want none within 20 s", a.Name, b.Name, err)
	}
	t.Logf("%v after the cut: %s (%s)", time.Since(cutAt).Round(100*time.Millisecond), p.Path, p.Reason)
	if !strings.Contains(p.Reason, "no answer for ") || p.Endpoint != "" {
		t.Errorf("path none: reason %q endpoint %q, want how long the peer has been silent and no endpoint", p.Reason, p.Endpoint)
	}
	return p
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

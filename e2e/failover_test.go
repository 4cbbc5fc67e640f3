package e2e

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// standbyIP is the second coordinator's address in TestCoordinatorFailover.
const standbyIP = "203.0.113.11"

// TestCoordinatorFailover gives two agents two coordinator URLs. The first
// coordinator serves; the second address has nothing listening. Then the
// first is SIGKILLed and a coordinator is started on the same state (one
// mesh, one store) at the second address, as a standby taking over would:
// each agent must be on it within 5 s of it being up, its status naming it,
// and pings over the direct tunnel must keep coming back throughout.
func TestCoordinatorFailover(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	if err := coord.Host.AddAddr(standbyIP + "/32"); err != nil {
		t.Fatal(err)
	}
	first, standby := coord.URL, "http://"+standbyIP+":8080"
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.FullCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.PortRestricted)
	key := authKey(t, coord, true)
	agents := []*meshlab.Agent{alpha, beta}
	for _, a := range agents {
		a.ExtraArgs = []string{"--coordinator", standby}
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, agents, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if err := waitCoordinatorURL(ctx, a, first, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ipBeta := overlayIP(t, beta)
	if _, err := meshlab.WaitPath(ctx, alpha, beta.Name, "direct", 40*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("ping before the fail-over: %v\n%s", err, out)
	}

	// Pings run through the whole move.
	pingThrough(t, alpha, ipBeta, "the fail-over", func() {
		killCoordinator(t, coord)
		for _, a := range agents {
			if err := waitCoordinator(ctx, a, false, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if err := coord.RestartAt(ctx, standbyIP); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		for _, a := range agents {
			if err := waitCoordinatorURL(ctx, a, standby, 5*time.Second-time.Since(up)); err != nil {
				t.Fatalf("%v (5 s after the standby came up)", err)
			}
		}
		t.Logf("both agents on the standby %.1f s after it came up", time.Since(up).Seconds())
	})
	// The standby signals new sessions: a node joining through it reaches
	// the old ones.
	joinReaches(t, lab, coord, "gamma", natlab.FullCone, key, nil, ipBeta)
}

// pingThrough pings ip from a over the overlay, 60 echoes one every 0.25 s,
// while event runs (from 2 s after the first echo), and fails the test
// unless every echo came back.
func pingThrough(t *testing.T, a *meshlab.Agent, ip, during string, event func()) {
	t.Helper()
	const echoes = 60
	pings := startPings(t.Context(), a, ip, echoes)
	time.Sleep(2 * time.Second)
	event()
	res := <-pings
	t.Logf("during %s: %s", during, lastLine(res.Out, "packets transmitted"))
	if res.Sent != echoes || res.Received < echoes {
		t.Fatalf("overlay ping during %s: %d of %d replies, allowed loss 0\n%s", during, res.Received, res.Sent, res.Out)
	}
}

// joinReaches starts a new agent name at a site of kind with key (and
// extra flags) through coord, pings each of ips from it, and returns it.
func joinReaches(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, name string, kind natlab.Kind, key string, extra []string, ips ...string) *meshlab.Agent {
	t.Helper()
	ctx := t.Context()
	a := addSiteAgent(t, lab, coord, name, kind)
	a.ExtraArgs = extra
	if err := a.Up(ctx, key, 30*time.Second); err != nil {
		t.Fatalf("new node %s: %v", name, err)
	}
	for _, ip := range ips {
		if out, err := pingUntil(ctx, a, ip, 30*time.Second); err != nil {
			t.Fatalf("%s -> %s: %v\n%s", name, ip, err, out)
		}
	}
	return a
}

// waitCoordinatorURL waits until a's status says it is connected to url.
func waitCoordinatorURL(ctx context.Context, a *meshlab.Agent, url string, timeout time.Duration) error {
	return natlab.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		if !st.Coordinator.Connected || st.Coordinator.URL != url {
			return fmt.Errorf("%s: coordinator %s connected=%v (%s), want connected to %s", a.Name, st.Coordinator.URL, st.Coordinator.Connected, st.Coordinator.LastError, url)
		}
		return nil
	})
}

// startPings pings ip from a over the overlay, count echoes one every
// 0.25 s, in the background; the result comes on the channel.
func startPings(ctx context.Context, a *meshlab.Agent, ip string, count int) <-chan pingResult {
	pings := make(chan pingResult, 1)
	go func() {
		res, err := pingCount(ctx, a, ip, count, "0.25")
		if err != nil {
			res.Out += "\n" + err.Error()
		}
		pings <- res
	}()
	return pings
}

// killCoordinator SIGKILLs c and waits until it is gone.
func killCoordinator(t *testing.T, c *meshlab.Coordinator) {
	t.Helper()
	c.Proc.Signal(syscall.SIGKILL)
	if err := c.Proc.Wait(10 * time.Second); errors.Is(err, natlab.ErrTimeout) || !c.Proc.Exited() {
		t.Fatalf("coordinator on %s did not die: %v", c.URL, err)
	}
}

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestSharedRelayOneAllocationPerAgent: four agents behind symmetric NATs,
// every pair relayed through the embedded relay, with
// --relay-client=shared. The relay holds one allocation per agent, not one
// per relayed pair and side (12 with per-peer sessions): counted from the
// relay's own sockets (one UDP socket per allocation in its relay range).
func TestSharedRelayOneAllocationPerAgent(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	key := authKey(t, coord, true)
	const n = 4
	agents := make([]*meshlab.Agent, n)
	for i := range agents {
		agents[i] = addSiteAgent(t, lab, coord, fmt.Sprintf("sh%d", i+1), natlab.Symmetric)
		agents[i].ExtraArgs = append(agents[i].ExtraArgs, "--relay-client=shared")
		if err := agents[i].Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range agents {
		seen := map[string]bool{}
		for j, b := range agents {
			if i == j {
				continue
			}
			if out, err := pingUntil(ctx, a, overlayIP(t, b), 40*time.Second); err != nil {
				t.Fatalf("%s -> %s: %v\n%s", a.Name, b.Name, err, out)
			}
			p, err := meshlab.WaitPath(ctx, a, b.Name, "relay", 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if p.Relay == nil || p.Relay.Allocation == "" {
				t.Fatalf("%s -> %s: relayed path without an allocation: %+v", a.Name, b.Name, p)
			}
			seen[p.Relay.Allocation] = true
		}
		if len(seen) != 1 {
			t.Errorf("%s relays to its %d peers through allocations %v, want one", a.Name, n-1, seen)
		}
	}
	// Probe allocations come and go within a second; count a settled view.
	var allocs int
	if err := natlab.Poll(ctx, 10*time.Second, 500*time.Millisecond, func() error {
		out, err := coord.Host.Run(ctx, "ss", "-Huan")
		if err != nil {
			return err
		}
		allocs = relaySockets(out)
		if allocs != n {
			return fmt.Errorf("relay holds %d allocations for %d agents with %d relayed pairs, want %d:\n%s", allocs, n, n*(n-1)/2, n, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("relay allocations: %d for %d agents, %d relayed pairs", allocs, n, n*(n-1)/2)
}

// relaySockets counts the UDP sockets in the embedded relay's default
// range (49152-65535) in `ss -Huan` output.
func relaySockets(ss string) int {
	count := 0
	for _, line := range strings.Split(ss, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local := f[3]
		if len(f) >= 5 && !strings.Contains(f[3], ":") {
			local = f[4]
		}
		i := strings.LastIndex(local, ":")
		if i < 0 {
			continue
		}
		if port, err := strconv.Atoi(local[i+1:]); err == nil && port >= 49152 {
			count++
		}
	}
	return count
}

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRelayIdleNotSilent: two agents behind symmetric NATs on the shared
// relay client, idle after one ping for longer than a persistent
// keepalive period (25 s). WireGuard answers no keepalive, so an idle
// relayed path must not be called silent: the agents logged "no working
// path to peer … why=relay silent" 3 s after the controlled side turned
// its keepalives on, and whenever the two sides' keepalives fell more
// than 3 s apart.
func TestRelayIdleNotSilent(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	key := authKey(t, coord, true)
	var agents [2]*meshlab.Agent
	for i := range agents {
		agents[i] = addSiteAgent(t, lab, coord, []string{"quiet1", "quiet2"}[i], natlab.Symmetric)
		agents[i].ExtraArgs = append(agents[i].ExtraArgs, "--relay-client=shared")
		if err := agents[i].Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := pingUntil(ctx, agents[0], overlayIP(t, agents[1]), 40*time.Second); err != nil {
		t.Fatalf("no overlay ping: %v\n%s", err, out)
	}
	if _, err := meshlab.WaitPath(ctx, agents[0], agents[1].Name, "relay", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-time.After(32 * time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	for _, a := range agents {
		b, err := os.ReadFile(a.Proc.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "relay silent") {
				t.Errorf("%s called an idle relayed path silent: %s", a.Name, line)
			}
		}
	}
}

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// newLab skips without root, fails without binaries, and returns a lab with
// a running coordinator. The lab closes itself (and dumps the process logs
// if the test failed) when the test ends.
func newLab(t testing.TB) (*natlab.Lab, *meshlab.Coordinator) {
	return newLabWith(t, meshlab.StartCoordinator)
}

// newLabWith is newLab with another way to start the coordinator.
func newLabWith(t testing.TB, start func(context.Context, *natlab.Lab, meshlab.Bins) (*meshlab.Coordinator, error)) (*natlab.Lab, *meshlab.Coordinator) {
	t.Helper()
	natlab.Require(t)
	bins, err := meshlab.FindBins()
	if err != nil {
		t.Fatal(err)
	}
	lab, err := natlab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	coord, err := start(t.Context(), lab, bins)
	if err != nil {
		t.Fatal(err)
	}
	return lab, coord
}

// addSiteAgent adds a site of the given kind and prepares an agent named
// like the site on its host.
func addSiteAgent(t testing.TB, lab *natlab.Lab, coord *meshlab.Coordinator, name string, kind natlab.Kind) *meshlab.Agent {
	t.Helper()
	site, err := lab.AddSite(name, kind)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, site.Host, name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// authKey creates an auth key or fails the test.
func authKey(t testing.TB, coord *meshlab.Coordinator, reusable bool) string {
	t.Helper()
	key, err := coord.AuthKey(t.Context(), reusable)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// overlayIP returns the agent's own overlay address from its status.
func overlayIP(t testing.TB, a *meshlab.Agent) string {
	t.Helper()
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.IP == "" {
		t.Fatalf("%s: status has no overlay IP", a.Name)
	}
	return st.Self.IP
}

// pingUntil pings ip from a over the overlay until one ping run succeeds,
// for at most timeout. It returns the successful output. It stops early if
// the local agent dies.
func pingUntil(ctx context.Context, a *meshlab.Agent, ip string, timeout time.Duration) (string, error) {
	var out string
	err := natlab.Poll(ctx, timeout, 500*time.Millisecond, func() error {
		if err := a.Running(); err != nil {
			return natlab.Fatal(err)
		}
		var err error
		out, err = meshlab.PingIP(ctx, a, ip, 2)
		return err
	})
	return out, err
}

// startOnline starts the agents with key and waits until each sees all the
// others online, or fails the test.
func startOnline(t testing.TB, key string, agents ...*meshlab.Agent) {
	t.Helper()
	for _, a := range agents {
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(t.Context(), agents, 60*time.Second); err != nil {
		t.Fatalf("mesh did not come up: %v", err)
	}
}

package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestAuthKeyErrors checks that `meshvpn up` with a bad auth key gives up
// quickly with a clear message and leaves no TUN device behind.
func TestAuthKeyErrors(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	site, err := lab.AddSite("office", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	newAgent := func(name string) *meshlab.Agent {
		h := site.Host
		if name != site.Name {
			if h, err = site.AddHost(name); err != nil {
				t.Fatal(err)
			}
		}
		a, err := meshlab.NewAgent(coord, h, name)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	t.Run("unknown", func(t *testing.T) {
		// A well-formed key the coordinator never issued: a real one with
		// its last character changed.
		issued := authKey(t, coord, true)
		last := issued[len(issued)-1]
		swap := byte('A')
		if last == 'A' {
			swap = 'B'
		}
		expectRejected(t, newAgent("stranger"), issued[:len(issued)-1]+string(swap), "unknown auth key")
	})

	t.Run("used-single-use", func(t *testing.T) {
		key := authKey(t, coord, false)
		first := newAgent(site.Name)
		if err := first.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatalf("first use of a single-use key failed: %v\n%s", err, first.Proc.Log())
		}
		expectRejected(t, newAgent("second"), key, "auth key already used")
	})

	t.Run("expired", func(t *testing.T) {
		key, err := coord.AuthKey(ctx, true, "--expiry", "1s")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		expectRejected(t, newAgent("late"), key, "auth key expired")
	})
}

// expectRejected starts a with key and expects it to exit non-zero within
// a bounded time, say the coordinator's reason (reason, as the coordinator
// words it: each refused key has its own), and leave no TUN.
func expectRejected(t *testing.T, a *meshlab.Agent, key, reason string) {
	t.Helper()
	if err := a.Start(key); err != nil {
		t.Fatal(err)
	}
	err := a.Proc.Wait(30 * time.Second)
	log := strings.TrimSpace(a.Proc.Log())
	if errors.Is(err, natlab.ErrTimeout) {
		t.Fatalf("meshvpn up with a bad key still runs after 30s:\n%s", log)
	}
	if err == nil {
		t.Fatalf("meshvpn up with a bad key exited 0:\n%s", log)
	}
	t.Logf("exit code %d, output:\n%s", a.Proc.ExitCode(), log)
	if want := "coordinator refused: " + reason + " (HTTP 401)"; !strings.Contains(log, want) {
		t.Errorf("the output does not give the reason %q; got:\n%s", want, log)
	}
	if a.HasTUN(t.Context()) {
		t.Errorf("TUN %s left behind in %s", meshlab.TUN, a.Host.NS)
	}
}

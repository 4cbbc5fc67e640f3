package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestTLSCoordinator runs the coordinator with HTTPS under a private CA:
// agents given the CA join and reach each other; an agent without it stops
// at once, saying the certificate is not trusted, and leaves no TUN.
func TestTLSCoordinator(t *testing.T) {
	lab, coord := newLabWith(t, meshlab.StartCoordinatorTLS)
	ctx := t.Context()
	key := authKey(t, coord, true)

	stranger := addSiteAgent(t, lab, coord, "stranger", natlab.FullCone)
	stranger.NoCA = true
	if err := stranger.Start(key); err != nil {
		t.Fatal(err)
	}
	err := stranger.Proc.Wait(30 * time.Second)
	log := stranger.Proc.Log()
	if errors.Is(err, natlab.ErrTimeout) || err == nil {
		t.Fatalf("agent without the CA: want a quick non-zero exit, got %v:\n%s", err, log)
	}
	if !strings.Contains(log, "not trusted") {
		t.Errorf("agent without the CA does not say the certificate is not trusted:\n%s", log)
	}
	if stranger.HasTUN(ctx) {
		t.Errorf("TUN left behind by the agent without the CA")
	}

	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.PortRestricted)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.RestrictedCone)
	for _, a := range []*meshlab.Agent{alpha, beta} {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{alpha, beta}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, alpha, overlayIP(t, beta), 30*time.Second); err != nil {
		t.Fatalf("ping over the mesh of a TLS coordinator: %v\n%s", err, out)
	}
	st, err := alpha.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Coordinator.URL, "https://") || !st.Coordinator.Connected {
		t.Errorf("alpha's coordinator status %+v, want connected over https", st.Coordinator)
	}
}

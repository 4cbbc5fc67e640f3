package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// The second replica's host in TestReplicas.
const (
	replicaIP    = "203.0.113.12"
	replicaAltIP = "198.51.100.12"
)

// newReplicaLab starts a lab whose coordinator A keeps its store in a
// throwaway PostgreSQL cluster on its own lab host, and a second replica B
// (coord2, replicaIP) on the same database.
func newReplicaLab(t *testing.T) (*natlab.Lab, *meshlab.Coordinator, *meshlab.Coordinator) {
	t.Helper()
	var bins meshlab.Bins
	lab, coordA := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, b meshlab.Bins) (*meshlab.Coordinator, error) {
		bins = b
		pgHost, err := lab.AddPublicHost("pg", pgHostIP)
		if err != nil {
			return nil, err
		}
		cluster := pgtest.Start(t, pgHostIP, []string{meshlab.CoordinatorIP + "/32", replicaIP + "/32"}, func(argv []string) *exec.Cmd {
			return pgHost.Command(context.WithoutCancel(ctx), argv[0], argv[1:]...)
		})
		return meshlab.StartCoordinatorWith(ctx, lab, b, meshlab.CoordinatorOptions{Store: cluster.URL("postgres")})
	})
	coordB, err := meshlab.StartCoordinatorWith(t.Context(), lab, bins, meshlab.CoordinatorOptions{Store: coordA.Store, Host: "coord2", IP: replicaIP, AltIP: replicaAltIP})
	if err != nil {
		t.Fatal(err)
	}
	return lab, coordA, coordB
}

// TestReplicas runs two coordinators on one PostgreSQL database (a
// throwaway cluster on its own lab host), agents spread over them, each
// agent given both URLs:
//   - the agents of both replicas see each other online, go direct (ICE
//     signalled across the replicas) and ping each other;
//   - replica B is SIGKILLed: its agent moves to A within 5 s and the
//     pings through the tunnel keep coming back;
//   - a new node joins through the survivor and reaches the old ones;
//   - B is started again and an admin command on B reaches A's agents;
//   - registrations sent to both replicas at once never share an address.
func TestReplicas(t *testing.T) {
	lab, coordA, coordB := newReplicaLab(t)
	ctx := t.Context()
	alpha := addSiteAgent(t, lab, coordA, "alpha", natlab.FullCone)
	alpha.ExtraArgs = []string{"--coordinator", coordB.URL}
	beta := addSiteAgent(t, lab, coordB, "beta", natlab.PortRestricted)
	beta.ExtraArgs = []string{"--coordinator", coordA.URL}
	key := authKey(t, coordA, true)
	startOnline(t, key, alpha, beta)
	if err := waitCoordinatorURL(ctx, alpha, coordA.URL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitCoordinatorURL(ctx, beta, coordB.URL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ipAlpha, ipBeta := overlayIP(t, alpha), overlayIP(t, beta)
	if ipAlpha == ipBeta {
		t.Fatalf("alpha and beta share %s", ipAlpha)
	}
	// Direct: the ICE offer, answer and candidates crossed the replicas.
	if _, err := meshlab.WaitPath(ctx, alpha, beta.Name, "direct", 40*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Fatalf("alpha (on A) -> beta (on B): %v\n%s", err, out)
	}
	if out, err := pingUntil(ctx, beta, ipAlpha, 30*time.Second); err != nil {
		t.Fatalf("beta (on B) -> alpha (on A): %v\n%s", err, out)
	}

	// Pings run through the kill.
	pingThrough(t, alpha, ipBeta, "the kill of B", func() {
		killCoordinator(t, coordB)
		killed := time.Now()
		if err := waitCoordinatorURL(ctx, beta, coordA.URL, 5*time.Second); err != nil {
			t.Fatalf("%v (5 s after B was killed)", err)
		}
		t.Logf("beta on replica A %.1f s after B was killed", time.Since(killed).Seconds())
	})

	// A new node joins through the survivor and reaches the old ones.
	gamma := joinReaches(t, lab, coordA, "gamma", natlab.RestrictedCone, key, []string{"--coordinator", coordB.URL}, ipAlpha, ipBeta)

	// B comes back; an admin command on B reaches the agents on A.
	if err := coordB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coordB.Admin(ctx, "nodes", "rename", "gamma", "gamma-b"); err != nil {
		t.Fatal(err)
	}
	renamed := time.Now()
	err := natlab.Poll(ctx, 2*time.Second, 50*time.Millisecond, func() error {
		st, err := alpha.Status(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == "gamma-b" {
				return nil
			}
		}
		return fmt.Errorf("alpha (on A) does not see gamma renamed through B")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rename through B seen by alpha on A within %v", time.Since(renamed).Round(10*time.Millisecond))

	// Registrations sent to both replicas at once: 2 x 15 over plain HTTP
	// from each replica's own host.
	const each = 15
	var mu sync.Mutex
	ips := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, c := range []*meshlab.Coordinator{coordA, coordB} {
		for i := range each {
			wg.Go(func() {
				r, err := curlRegister(ctx, c, key, fmt.Sprintf("conc-%d", i))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, dup := ips[r.IP]; dup {
					errs <- fmt.Errorf("address %s given to %s and %s", r.IP, other, r.Name)
				}
				ips[r.IP] = r.Name
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, ip := range []string{ipAlpha, ipBeta, overlayIP(t, gamma)} {
		if n, dup := ips[ip]; dup {
			t.Errorf("address %s of a running agent given to %s", ip, n)
		}
	}
	if len(ips) != 2*each {
		t.Errorf("%d distinct addresses from %d concurrent registrations", len(ips), 2*each)
	}
}

// curlRegister registers a made-up node at c over HTTP from c's own host.
func curlRegister(ctx context.Context, c *meshlab.Coordinator, key, host string) (control.RegisterResponse, error) {
	var pub [32]byte
	rand.Read(pub[:])
	body, _ := json.Marshal(control.RegisterRequest{AuthKey: key, Hostname: host, PublicKey: base64.StdEncoding.EncodeToString(pub[:])})
	out, err := c.Host.Run(ctx, "curl", "-sS", "--max-time", "20", "-H", "Content-Type: application/json",
		"--data-binary", string(body), c.URL+control.PathRegister)
	var r control.RegisterResponse
	if err != nil {
		return r, fmt.Errorf("register %s at %s: %w", host, c.URL, err)
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil || r.IP == "" {
		return r, fmt.Errorf("register %s at %s: %q", host, c.URL, out)
	}
	return r, nil
}

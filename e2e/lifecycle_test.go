package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// propagationLimit is how soon after the coordinator acts every connected
// agent must have dropped a removed or expired node. It is measured between
// the coordinator's and the agents' own log timestamps (one machine, one
// clock), so the polling of `meshvpn status` does not count.
const propagationLimit = time.Second

// TestLifecycleRemove removes one of three agents with `nodes remove`: the
// other two drop it from their status and WireGuard devices within a
// second, the removed agent loses its peers and can reach nobody, and a
// restart with its stored credential is refused. Tags of the auth key show
// in the peers' status, and a rename reaches them too.
func TestLifecycleRemove(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.FullCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.PortRestricted)
	gamma := addSiteAgent(t, lab, coord, "gamma", natlab.RestrictedCone)
	tagged, err := coord.AuthKey(ctx, true, "--tag", "web", "--tag", "tag:prod")
	if err != nil {
		t.Fatal(err)
	}
	plain := authKey(t, coord, true)
	all := []*meshlab.Agent{alpha, beta, gamma}
	for _, a := range all {
		key := plain
		if a == alpha {
			key = tagged
		}
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, all, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	wantTags := []string{"tag:prod", "web"}
	if st := status(t, alpha); !slices.Equal(st.Self.Tags, wantTags) {
		t.Errorf("alpha's own tags %q, want %q", st.Self.Tags, wantTags)
	}
	if p := status(t, beta).Peer("alpha"); p == nil || !slices.Equal(p.Tags, wantTags) {
		t.Errorf("beta sees alpha with tags %+v, want %q", p, wantTags)
	}
	ipAlpha, ipBeta, ipGamma := overlayIP(t, alpha), overlayIP(t, beta), overlayIP(t, gamma)
	for _, ip := range []string{ipAlpha, ipBeta} {
		if out, err := pingUntil(ctx, gamma, ip, 40*time.Second); err != nil {
			t.Fatalf("gamma -> %s before removal: %v\n%s", ip, err, out)
		}
	}
	gammaKey := status(t, gamma).Self.PublicKey
	for _, a := range []*meshlab.Agent{alpha, beta} {
		waitStatus(t, a, 30*time.Second, func(st *meshlab.Status) error {
			if !slices.Contains(st.WireGuardPeers, gammaKey) {
				return fmt.Errorf("%s's WireGuard has no peer for gamma yet", a.Name)
			}
			return nil
		})
	}

	out, err := coord.Admin(ctx, "nodes", "remove", "gamma", "--json")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var removed struct {
		Name string `json:"name"`
		Via  string `json:"via"`
	}
	if err := json.Unmarshal([]byte(out), &removed); err != nil || removed.Name != "gamma" || removed.Via != "server" {
		t.Fatalf("nodes remove --json: %q (%v), want gamma removed via the running server", out, err)
	}
	for _, a := range []*meshlab.Agent{alpha, beta} {
		waitGone(t, a, "gamma", gammaKey)
	}
	t.Logf("both peers' status and WireGuard lost gamma %v after the command returned (status polling included)", time.Since(start).Round(time.Millisecond))
	checkPropagation(t, coord, `msg="node removed"`, "gamma", alpha, beta)

	// The removed agent is told, drops its peers and reaches no one.
	waitStatus(t, gamma, 10*time.Second, func(st *meshlab.Status) error {
		if !strings.Contains(st.Coordinator.LastError, "node removed") || len(st.Peers) != 0 || len(st.WireGuardPeers) != 0 {
			return fmt.Errorf("gamma: last error %q, %d peers, %d WireGuard peers", st.Coordinator.LastError, len(st.Peers), len(st.WireGuardPeers))
		}
		return nil
	})
	if out, err := meshlab.PingIP(ctx, gamma, ipAlpha, 2); err == nil {
		t.Errorf("removed gamma still reaches alpha:\n%s", out)
	}
	if out, err := meshlab.PingIP(ctx, alpha, ipGamma, 2); err == nil {
		t.Errorf("alpha still reaches removed gamma:\n%s", out)
	}
	if nodes := nodeNames(t, coord); slices.Contains(nodes, "gamma") {
		t.Errorf("nodes list still has gamma: %q", nodes)
	}
	// The other two still talk.
	if out, err := pingUntil(ctx, alpha, ipBeta, 30*time.Second); err != nil {
		t.Errorf("alpha -> beta after gamma's removal: %v\n%s", err, out)
	}

	// A rename reaches the peer's status the same way.
	if _, err := coord.Admin(ctx, "nodes", "rename", "beta", "db-1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, alpha, 10*time.Second, func(st *meshlab.Status) error {
		if st.Peer("db-1") == nil || st.Peer("beta") != nil {
			return errors.New("alpha does not list beta as db-1 yet")
		}
		return nil
	})

	expectRefusedRestart(t, gamma, "node removed")
	if !strings.Contains(coord.Proc.Log(), `reason="node removed"`) {
		t.Errorf("coordinator did not log the refusal of the removed node:\n%s", coord.Proc.Log())
	}
}

// TestLifecycleExpire expires an agent with `nodes expire`: its peer drops
// it within a second, its restart with the stored credential is refused
// ("node expired"), and joining again with an auth key gives it back its
// address and its peer.
func TestLifecycleExpire(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	alpha := addSiteAgent(t, lab, coord, "alpha", natlab.FullCone)
	beta := addSiteAgent(t, lab, coord, "beta", natlab.PortRestricted)
	key := authKey(t, coord, true)
	both := []*meshlab.Agent{alpha, beta}
	for _, a := range both {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ipAlpha, ipBeta := overlayIP(t, alpha), overlayIP(t, beta)
	if out, err := pingUntil(ctx, alpha, ipBeta, 40*time.Second); err != nil {
		t.Fatalf("alpha -> beta: %v\n%s", err, out)
	}
	betaKey := status(t, beta).Self.PublicKey

	if _, err := coord.Admin(ctx, "nodes", "expire", ipBeta); err != nil { // by overlay IP
		t.Fatal(err)
	}
	waitGone(t, alpha, "beta", betaKey)
	checkPropagation(t, coord, `msg="node expired"`, "beta", alpha)
	waitStatus(t, beta, 10*time.Second, func(st *meshlab.Status) error {
		if !strings.Contains(st.Coordinator.LastError, "node expired") || len(st.WireGuardPeers) != 0 {
			return fmt.Errorf("beta: last error %q, %d WireGuard peers", st.Coordinator.LastError, len(st.WireGuardPeers))
		}
		return nil
	})
	if out, err := meshlab.PingIP(ctx, beta, ipAlpha, 2); err == nil {
		t.Errorf("expired beta still reaches alpha:\n%s", out)
	}
	out, err := coord.Admin(ctx, "nodes", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []struct {
		Name    string `json:"name"`
		Expired bool   `json:"expired"`
	}
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 2 || nodes[1].Name != "beta" || !nodes[1].Expired {
		t.Errorf("nodes list after expiry: %q (%v), want beta listed as expired", out, err)
	}

	expectRefusedRestart(t, beta, "node expired")

	// A new auth key vouches for it again: same address, peer reachable.
	if err := beta.Up(ctx, key, 30*time.Second); err != nil {
		t.Fatalf("rejoin with an auth key: %v", err)
	}
	if got := overlayIP(t, beta); got != ipBeta {
		t.Errorf("beta rejoined as %s, want its old %s", got, ipBeta)
	}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, alpha, ipBeta, 40*time.Second); err != nil {
		t.Fatalf("alpha -> beta after rejoin: %v\n%s", err, out)
	}
}

// TestLifecycleEphemeral joins a node with an --ephemeral key to a
// coordinator with a short --ephemeral-timeout: it stays while online, and
// is removed (from the store and from its peer) once offline for longer
// than the timeout.
func TestLifecycleEphemeral(t *testing.T) {
	const timeout = 3 * time.Second
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--ephemeral-timeout", timeout.String(), "--ephemeral-grace", "30s"))
	ctx := t.Context()
	perm := addSiteAgent(t, lab, coord, "perm", natlab.FullCone)
	temp := addSiteAgent(t, lab, coord, "temp", natlab.PortRestricted)
	if err := perm.Up(ctx, authKey(t, coord, false), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ephKey, err := coord.AuthKey(ctx, false, "--ephemeral", "--tag", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if err := temp.Up(ctx, ephKey, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	both := []*meshlab.Agent{perm, temp}
	if err := meshlab.WaitOnline(ctx, both, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Online for longer than the timeout: it stays.
	if out, err := pingUntil(ctx, perm, overlayIP(t, temp), 40*time.Second); err != nil {
		t.Fatalf("perm -> temp: %v\n%s", err, out)
	}
	time.Sleep(timeout + time.Second)
	if p := status(t, perm).Peer("temp"); p == nil || !p.Online || !slices.Equal(p.Tags, []string{"ci"}) {
		t.Fatalf("online ephemeral node: perm sees %+v", p)
	}

	if err := temp.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitStatus(t, perm, 30*time.Second, func(st *meshlab.Status) error {
		if st.Peer("temp") != nil {
			return errors.New("perm still lists temp")
		}
		return nil
	})
	took := time.Since(stopped)
	t.Logf("ephemeral node left perm's status %v after it stopped (timeout %v)", took.Round(time.Millisecond), timeout)
	if took < timeout-500*time.Millisecond {
		t.Errorf("ephemeral node removed %v after going offline, before its %v timeout", took, timeout)
	}
	// The timeout, plus the coordinator's sweep (timeout/5), the hub's
	// batching (at most 0.5 s) and our status polling, with room for a busy
	// machine.
	if limit := timeout + 3*time.Second; took > limit {
		t.Errorf("ephemeral node removed %v after going offline, want within %v (timeout %v)", took, limit, timeout)
	}
	if !strings.Contains(coord.Proc.Log(), `reason="ephemeral node offline"`) {
		t.Errorf("coordinator did not log why it removed temp")
	}
	if nodes := nodeNames(t, coord); !slices.Equal(nodes, []string{"perm"}) {
		t.Errorf("nodes after the ephemeral node left: %q", nodes)
	}
	expectRefusedRestart(t, temp, "node removed")
}

func status(t *testing.T, a *meshlab.Agent) *meshlab.Status {
	t.Helper()
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls a's status until ok accepts it.
func waitStatus(t *testing.T, a *meshlab.Agent, timeout time.Duration, ok func(*meshlab.Status) error) {
	t.Helper()
	err := natlab.Poll(t.Context(), timeout, 100*time.Millisecond, func() error {
		if err := a.Running(); err != nil {
			return natlab.Fatal(err)
		}
		st, err := a.Status(t.Context())
		if err != nil {
			return err
		}
		return ok(st)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitGone waits until a neither lists peer nor has its key in WireGuard.
func waitGone(t *testing.T, a *meshlab.Agent, peer, key string) {
	t.Helper()
	waitStatus(t, a, 10*time.Second, func(st *meshlab.Status) error {
		if st.Peer(peer) != nil {
			return fmt.Errorf("%s still lists %s", a.Name, peer)
		}
		if slices.Contains(st.WireGuardPeers, key) {
			return fmt.Errorf("%s's WireGuard still has %s's key", a.Name, peer)
		}
		return nil
	})
}

var logTimeRE = regexp.MustCompile(`time=(\S+)`)

// logTime is the timestamp of the first log line containing all of subs.
func logTime(log string, subs ...string) (time.Time, bool) {
	for line := range strings.Lines(log) {
		match := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		if m := logTimeRE.FindStringSubmatch(line); m != nil {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				return ts, true
			}
		}
	}
	return time.Time{}, false
}

// checkPropagation compares when the coordinator logged msg for node with
// when each agent logged dropping it.
func checkPropagation(t *testing.T, coord *meshlab.Coordinator, msg, node string, agents ...*meshlab.Agent) {
	t.Helper()
	at, ok := logTime(coord.Proc.Log(), msg, "name="+node)
	if !ok {
		t.Fatalf("coordinator did not log %s for %s", msg, node)
	}
	for _, a := range agents {
		dropped, ok := logTime(a.Proc.Log(), `msg="peer removed"`, "peer="+node)
		if !ok {
			t.Fatalf("%s did not log removing peer %s", a.Name, node)
		}
		d := dropped.Sub(at)
		t.Logf("%s dropped %s %v after the coordinator acted", a.Name, node, d.Round(time.Microsecond))
		if d > propagationLimit {
			t.Errorf("%s dropped %s %v after the coordinator acted, over %v", a.Name, node, d, propagationLimit)
		}
	}
}

// expectRefusedRestart restarts a without an auth key and expects the
// coordinator's refusal of its stored credential: a non-zero exit that
// gives the reason, and no TUN left behind.
func expectRefusedRestart(t *testing.T, a *meshlab.Agent, reason string) {
	t.Helper()
	if err := a.Stop(15 * time.Second); err != nil {
		t.Fatalf("stop %s: %v", a.Name, err)
	}
	if err := a.Start(""); err != nil {
		t.Fatal(err)
	}
	err := a.Proc.Wait(30 * time.Second)
	log := strings.TrimSpace(a.Proc.Log())
	if errors.Is(err, natlab.ErrTimeout) {
		t.Fatalf("%s with a refused credential still runs after 30s:\n%s", a.Name, log)
	}
	if err == nil {
		t.Fatalf("%s with a refused credential exited 0:\n%s", a.Name, log)
	}
	if !strings.Contains(log, reason) || !strings.Contains(log, "--authkey") {
		t.Errorf("%s's refusal does not say %q and how to rejoin:\n%s", a.Name, reason, log)
	}
	if a.HasTUN(t.Context()) {
		t.Errorf("TUN left behind in %s", a.Host.NS)
	}
}

func nodeNames(t *testing.T, coord *meshlab.Coordinator) []string {
	t.Helper()
	nodes, err := coord.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names
}

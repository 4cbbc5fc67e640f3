package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRelayPairs connects the pairs that have no direct path through the
// coordinator's embedded TURN server: both sides report path "relay" with
// the transport their network allows, an overlay ping gets through, and
// ssh works across the relayed path.
func TestRelayPairs(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	ctx := t.Context()

	names := map[string]natlab.Kind{
		"sym1": natlab.Symmetric, "sym2": natlab.Symmetric, "pr1": natlab.PortRestricted,
		"fc1": natlab.FullCone, "ub1": natlab.UDPBlocked,
	}
	agents := map[string]*meshlab.Agent{}
	var all []*meshlab.Agent
	for _, n := range []string{"sym1", "sym2", "pr1", "fc1", "ub1"} {
		a := addSiteAgent(t, lab, coord, n, names[n])
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
		agents[n] = a
		all = append(all, a)
	}
	if err := meshlab.WaitOnline(ctx, all, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	sshd, err := meshlab.StartSSHD(ctx, agents["sym2"].Host, filepath.Join(lab.Dir, "sshd-sym2"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		a, b       string
		viaA, viaB string
		ssh        bool
	}{
		{"sym1", "sym2", "udp", "udp", true},
		{"sym1", "pr1", "udp", "udp", false},
		{"ub1", "fc1", "tcp", "udp", false},
		{"ub1", "sym2", "tcp", "udp", true},
	}
	for _, c := range cases {
		t.Run(c.a+"-"+c.b, func(t *testing.T) {
			a, b := agents[c.a], agents[c.b]
			ipB := overlayIP(t, b)
			if out, err := pingUntil(ctx, a, ipB, 40*time.Second); err != nil {
				t.Fatalf("overlay ping %s -> %s failed: %v\n%s", c.a, c.b, err, out)
			}
			checkRelayed(t, a, b, c.viaA, meshlab.CoordinatorIP)
			checkRelayed(t, b, a, c.viaB, meshlab.CoordinatorIP)
			if c.ssh {
				out, err := sshd.Run(ctx, a.Host, ipB, "ip netns identify")
				if err != nil {
					t.Fatalf("ssh %s -> %s over the relay: %v\n%s", c.a, c.b, err, out)
				}
				if strings.TrimSpace(out) != b.Host.NS {
					t.Errorf("ssh ran in %q, want %q", strings.TrimSpace(out), b.Host.NS)
				}
			}
		})
	}
}

// checkRelayed waits until from reports a relayed path to to, through a
// relay on relayHost reached over transport, and says why it is not direct.
func checkRelayed(t *testing.T, from, to *meshlab.Agent, transport, relayHost string) {
	t.Helper()
	p, err := meshlab.WaitPath(t.Context(), from, to.Name, "relay", 30*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s: %v", from.Name, to.Name, err)
	}
	t.Logf("%s -> %s: path=%s via=%+v reason=%q local=%s remote=%s endpoint=%s", from.Name, to.Name, p.Path, p.Relay, p.Reason, p.LocalType, p.RemoteType, p.Endpoint)
	if p.Relay == nil {
		t.Fatalf("%s -> %s: path relay but no relay in status", from.Name, to.Name)
	}
	if p.Relay.Transport != transport {
		t.Errorf("%s -> %s: relay transport %q, want %q", from.Name, to.Name, p.Relay.Transport, transport)
	}
	if !strings.HasPrefix(p.Relay.Server, relayHost+":") {
		t.Errorf("%s -> %s: relay server %q, want one on %s", from.Name, to.Name, p.Relay.Server, relayHost)
	}
	if p.Reason == "" {
		t.Errorf("%s -> %s: relayed without a reason", from.Name, to.Name)
	}
}

// TestRelayCoturn uses a real coturn with use-auth-secret as the mesh's
// only relay: the coordinator mints REST-scheme credentials from the
// shared secret, and two symmetric-NAT hosts talk through coturn.
func TestRelayCoturn(t *testing.T) {
	natlab.Require(t)
	var turn *meshlab.Coturn
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		var err error
		if turn, err = meshlab.StartCoturn(ctx, lab); err != nil {
			return nil, err
		}
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: turn.CoordinatorArgs()})
	})
	key := authKey(t, coord, true)
	a := addSiteAgent(t, lab, coord, "syma", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "symb", natlab.Symmetric)
	ctx := t.Context()
	startOnline(t, key, a, b)
	if out, err := pingUntil(ctx, a, overlayIP(t, b), 40*time.Second); err != nil {
		t.Fatalf("overlay ping through coturn failed: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "udp", meshlab.CoturnIP)
	checkRelayed(t, b, a, "udp", meshlab.CoturnIP)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Self.Relays {
		if strings.Contains(r.URL, meshlab.CoordinatorIP) {
			t.Errorf("embedded relay %s offered although --embedded-turn=false", r.URL)
		}
	}
	// coturn itself saw the allocations.
	if log := turn.Proc.Log(); !strings.Contains(log, "ALLOCATE") {
		t.Logf("coturn log:\n%s", log)
		t.Error("coturn logged no allocation")
	}
}

// cutDirect makes site's router drop UDP between its hosts and peerWAN in
// both directions (the relay's address stays reachable) until undo runs.
func cutDirect(ctx context.Context, router *natlab.Host, peerWAN string) (undo func() error, err error) {
	script := fmt.Sprintf(`table ip cut {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip daddr %[1]s meta l4proto udp drop
		ip saddr %[1]s meta l4proto udp drop
	}
}
`, peerWAN)
	if _, err := router.Run(ctx, "sh", "-c", "nft -f - <<'EOF'\n"+script+"EOF\n"); err != nil {
		return nil, err
	}
	return func() error {
		_, err := router.Run(context.Background(), "nft", "delete", "table", "ip", "cut")
		return err
	}, nil
}

// TestRelayFallbackAndUpgrade cuts a working direct path mid-session: the
// traffic must move to the relay within seconds and keep flowing, and
// when the direct path comes back the agents must move back to it.
func TestRelayFallbackAndUpgrade(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	siteA, err := lab.AddSite("cuta", natlab.FullCone)
	if err != nil {
		t.Fatal(err)
	}
	siteB, err := lab.AddSite("cutb", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, siteA.Host, "cuta")
	if err != nil {
		t.Fatal(err)
	}
	b, err := meshlab.NewAgent(coord, siteB.Host, "cutb")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	startOnline(t, key, a, b)
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 30*time.Second); err != nil {
		t.Fatalf("ping before the cut: %v\n%s", err, out)
	}
	if _, err := meshlab.WaitPath(ctx, a, "cutb", "direct", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// The relay lane must be ready too, or there is nothing to fall back to.
	waitRelayReady(t, a) // consent_test.go

	// A continuous ping runs across the cut and the restore; -D stamps each
	// reply, so every lost echo can be placed in time.
	pinger, err := a.Host.Start("ping", "-n", "-D", "-i", "0.2", "-W", "1", "-c", "600", ipB)
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop(2 * time.Second)
	if err := natlab.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		if n := len(parseEchoes(pinger.Log()).replies); n < 5 {
			return fmt.Errorf("%d echo replies before the cut", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	undo, err := cutDirect(ctx, siteA.Router, siteB.Router.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	defer func() {
		if undo != nil {
			_ = undo()
		}
	}()
	// Both sides must move: replies come back only once the peer has too.
	fellBack := waitBothPath(t, a, b, "relay", cutAt, 15*time.Second)
	fallback := fellBack.Sub(cutAt)
	t.Logf("both sides on the relay %v after the cut", fallback.Round(10*time.Millisecond))
	if fallback > pathSwitchLimit {
		t.Errorf("fell back to the relay %v after the cut; README promises about %v (limit %v)", fallback.Round(10*time.Millisecond), pathSwitchPromise, pathSwitchLimit)
	}
	if p, err := meshlab.WaitPath(ctx, a, "cutb", "relay", 0); err == nil {
		t.Logf("relay path: %+v reason=%q endpoint=%s", p.Relay, p.Reason, p.Endpoint)
	}
	if res, err := pingCount(ctx, a, ipB, 10, "0.2"); err != nil || res.Received != res.Sent {
		t.Fatalf("ping over the relay during the cut: %d of %d replies (allowed loss 0): %v\n%s", res.Received, res.Sent, err, res.Out)
	}
	if !strings.Contains(a.Proc.Log(), "falling back to relay") {
		t.Error("the agent's log does not say it fell back to the relay")
	}

	// While cut, `meshvpn ping --until-direct` gets relayed replies, never
	// a direct one, and says so with exit 1.
	out, err := a.Host.Run(ctx, a.Coord.Bins.Agent, "ping", "cutb", "--until-direct", "-c", "3", "-i", "0.2", "--socket", a.Socket)
	if err == nil || !strings.Contains(out, "via relay") {
		t.Errorf("ping --until-direct during the cut: err %v, want exit 1 after relayed replies:\n%s", err, out)
	}

	if err := undo(); err != nil {
		t.Fatal(err)
	}
	undo = nil
	restoredAt := time.Now()
	// --until-direct keeps pinging until the agents are back on the direct
	// path, then stops with exit 0.
	out, err = a.Host.Run(ctx, a.Coord.Bins.Agent, "ping", "cutb", "--until-direct", "-c", "300", "-i", "0.2", "--socket", a.Socket)
	if err != nil {
		t.Fatalf("ping --until-direct after the restore: %v\n%s", err, out)
	}
	t.Logf("ping --until-direct: %s", lastLines(out, 3))
	if !strings.Contains(lastLines(out, 2), "via direct") {
		t.Errorf("ping --until-direct stopped without a direct reply:\n%s", out)
	}
	upgraded := waitBothPath(t, a, b, "direct", restoredAt, 60*time.Second)
	upgrade := upgraded.Sub(restoredAt)
	t.Logf("both sides back on the direct path %v after the restore", upgrade.Round(10*time.Millisecond))
	if upgrade > pathSwitchLimit {
		t.Errorf("back on the direct path %v after the restore; README promises about %v for a path back within ICE's 10 s (limit %v)", upgrade.Round(10*time.Millisecond), pathSwitchPromise, pathSwitchLimit)
	}
	if res, err := pingCount(ctx, a, ipB, 10, "0.2"); err != nil || res.Received != res.Sent {
		t.Fatalf("ping after the upgrade: %d of %d replies (allowed loss 0): %v\n%s", res.Received, res.Sent, err, res.Out)
	}
	pinger.Signal(syscall.SIGINT)
	_ = pinger.Wait(3 * time.Second)
	t.Logf("continuous ping: %s", lastLines(pinger.Log(), 2))

	// The continuous ping lost the cut's gap and nothing more: every lost
	// echo was sent between the cut and the moment both sides were on the
	// relay (with half a second either side for the clocks), none across
	// the restore.
	echoes := parseEchoes(pinger.Log())
	lost, err := echoes.lost()
	if err != nil {
		t.Fatal(err)
	}
	from, to := cutAt.Add(-500*time.Millisecond), fellBack.Add(500*time.Millisecond)
	var outside []string
	for _, l := range lost {
		if l.sent.Before(from) || l.sent.After(to) {
			outside = append(outside, fmt.Sprintf("seq %d sent %v after the cut", l.seq, l.sent.Sub(cutAt).Round(10*time.Millisecond)))
		}
	}
	t.Logf("continuous ping: %d sent, %d lost, all in the cut's gap of %v: %v", echoes.sent, len(lost), fallback.Round(10*time.Millisecond), len(outside) == 0)
	if len(outside) > 0 {
		t.Errorf("continuous ping lost echoes outside the cut's gap (%v .. %v after the cut): %s",
			from.Sub(cutAt), to.Sub(cutAt).Round(10*time.Millisecond), strings.Join(outside, "; "))
	}
	if max := int(fallback/echoInterval) + 6; len(lost) > max {
		t.Errorf("continuous ping lost %d echoes, more than the %v gap holds (%d)", len(lost), fallback.Round(10*time.Millisecond), max)
	}
}

const (
	// pathSwitchPromise is README's: ICE checks unanswered for 3 s move
	// traffic to the relay, and a direct path that answers again is used
	// at the next check.
	pathSwitchPromise = 3 * time.Second
	// pathSwitchLimit allows for status polling and a busy machine.
	pathSwitchLimit = pathSwitchPromise + 2500*time.Millisecond
	echoInterval    = 200 * time.Millisecond // the continuous ping's -i
)

// waitBothPath polls a's and b's status until each shows path to the
// other, and returns when the later of the two first did.
func waitBothPath(t *testing.T, a, b *meshlab.Agent, path string, since time.Time, timeout time.Duration) time.Time {
	t.Helper()
	ctx := t.Context()
	at := map[string]time.Time{}
	err := natlab.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
			if _, ok := at[side.from.Name]; ok {
				continue
			}
			st, err := side.from.Status(ctx)
			if err != nil {
				return err
			}
			if p := st.Peer(side.to.Name); p != nil && p.Path == path {
				at[side.from.Name] = time.Now()
			}
		}
		if len(at) < 2 {
			return fmt.Errorf("path %s on %d of 2 sides", path, len(at))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s <-> %s: %v", a.Name, b.Name, err)
	}
	t.Logf("path %s: %s after %v, %s after %v", path, a.Name, at[a.Name].Sub(since).Round(10*time.Millisecond), b.Name, at[b.Name].Sub(since).Round(10*time.Millisecond))
	if at[a.Name].After(at[b.Name]) {
		return at[a.Name]
	}
	return at[b.Name]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// TestRelayTLS blocks UDP and TURN's TCP port at one site, so the only way
// out is TURN over TLS on :443: the agent verifies the relay's certificate
// against the lab CA it was given and relays over TLS.
func TestRelayTLS(t *testing.T) {
	lab, coord := newLabWith(t, meshlab.StartCoordinatorTLS)
	key := authKey(t, coord, true)
	site, err := lab.AddSite("hotel", natlab.UDPBlocked)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := site.Router.Run(ctx, "nft", "add", "rule", "ip", "natlab", "forward", "tcp", "dport", "3478", "drop"); err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, site.Host, "hotel")
	if err != nil {
		t.Fatal(err)
	}
	b := addSiteAgent(t, lab, coord, "office", natlab.Symmetric)
	startOnline(t, key, a, b)
	if out, err := pingUntil(ctx, a, overlayIP(t, b), 40*time.Second); err != nil {
		t.Fatalf("overlay ping over TURN/TLS failed: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "tls", meshlab.CoordinatorIP)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Self.Relays {
		t.Logf("hotel relay %s %s available=%v %s", r.Server, r.Transport, r.Available, r.Error)
		if r.Transport != "tls" && r.Available {
			t.Errorf("relay %s over %s available although the site blocks it", r.Server, r.Transport)
		}
	}
}

// TestRelayUnavailable gives the agents relays they cannot use - coturn
// with the wrong shared secret, and a TURN server that does not exist -
// and checks that status says why, the logs say so, and direct paths keep
// working.
func TestRelayUnavailable(t *testing.T) {
	natlab.Require(t)
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		turn, err := meshlab.StartCoturn(ctx, lab)
		if err != nil {
			return nil, err
		}
		wrong := filepath.Join(lab.Dir, "wrong-turn-secret")
		if err := os.WriteFile(wrong, []byte("not-"+turn.Secret), 0o600); err != nil {
			return nil, err
		}
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: []string{
			"--embedded-turn=false",
			"--turn-secret-file", wrong,
			"--turn-url", turn.URLs[0],
			"--turn-url", "turn:198.51.100.99:3478?transport=udp",
		}})
	})
	key := authKey(t, coord, true)
	a := addSiteAgent(t, lab, coord, "conea", natlab.FullCone)
	b := addSiteAgent(t, lab, coord, "coneb", natlab.RestrictedCone)
	ctx := t.Context()
	startOnline(t, key, a, b)
	checkDirectPair(t, a, b, overlayIP(t, b))
	var st *meshlab.Status
	err := natlab.Poll(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		var err error
		if st, err = a.Status(ctx); err != nil {
			return err
		}
		if len(st.Self.Relays) != 2 {
			return fmt.Errorf("want 2 relays in status, got %+v", st.Self.Relays)
		}
		for _, r := range st.Self.Relays {
			if r.Error == "" || r.Error == "not checked yet" {
				return fmt.Errorf("relay %s not checked yet", r.URL)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Self.Relays {
		t.Logf("relay %s: available=%v error=%q", r.URL, r.Available, r.Error)
		if r.Available {
			t.Errorf("relay %s reported available", r.URL)
		}
	}
	if !strings.Contains(st.Self.Relays[0].Error, "credentials refused") {
		t.Errorf("wrong secret: error %q does not say the credentials were refused", st.Self.Relays[0].Error)
	}
	if !strings.Contains(st.Self.Relays[1].Error, "no answer") {
		t.Errorf("missing server: error %q does not say it got no answer", st.Self.Relays[1].Error)
	}
	if !strings.Contains(a.Proc.Log(), "relay unavailable") {
		t.Error("the agent did not log that the relay is unavailable")
	}
	if out, err := meshlab.PingIP(ctx, a, overlayIP(t, b), 3); err != nil {
		t.Fatalf("direct path broken while relays fail: %v\n%s", err, out)
	}
}

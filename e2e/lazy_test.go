package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// Paths on demand (issue 16): agents with --lazy-peers on set a peer's
// path up only when something asks for it. Two agents, each behind its
// own port-restricted NAT (a direct path is possible, but only after a
// punch).

// lazyPair starts two lazy agents and waits until each sees the other
// online with path "idle": nothing set up yet.
func lazyPair(t *testing.T, idle string) (a, b *meshlab.Agent, bIP string) {
	t.Helper()
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	a = addSiteAgent(t, lab, coord, "lza", natlab.PortRestricted)
	b = addSiteAgent(t, lab, coord, "lzb", natlab.PortRestricted)
	for _, x := range []*meshlab.Agent{a, b} {
		// --verbose: TestLazyFirstPacket reads a debug line.
		x.ExtraArgs = append(x.ExtraArgs, "--lazy-peers", "on", "--lazy-idle", idle, "--verbose")
		hostIPv6On(t, x.Host) // for the IPv6 overlay
	}
	startOnline(t, key, a, b)
	// A path set up before both sides' NAT probes are done waits for
	// them (punchInfoWait): wait for the probes, as a mesh that has run
	// for a while has them. Idle all the same: nothing asked for a path.
	for _, x := range []*meshlab.Agent{a, b} {
		waitLog(t, x, `msg="local network"`, 20*time.Second)
	}
	time.Sleep(500 * time.Millisecond) // the views' signals cross the coordinator
	for _, x := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
		st, err := x[0].Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		p := st.Peer(x[1].Name)
		if p == nil || p.Path != "idle" {
			t.Fatalf("%s: before any packet the path to %s should be idle, status: %+v", x[0].Name, x[1].Name, p)
		}
		if len(st.WireGuardPeers) != 0 {
			t.Fatalf("%s: idle peers must have no WireGuard peer yet, device has %v", x[0].Name, st.WireGuardPeers)
		}
	}
	t.Logf("%s and %s: each shows the other idle", a.Name, b.Name)
	return a, b, overlayIP(t, b)
}

// waitLog waits until the agent's log has a line containing s.
func waitLog(t *testing.T, a *meshlab.Agent, s string, timeout time.Duration) {
	t.Helper()
	err := natlab.Poll(t.Context(), timeout, 100*time.Millisecond, func() error {
		b, err := os.ReadFile(a.Proc.LogPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), s) {
			return fmt.Errorf("%s: no %s in its log yet", a.Name, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// handshakeRetryLine is the agent's debug line for a new path that had
// no WireGuard handshake after handshakeGrace (agent/peer.go).
const handshakeRetryLine = "no handshake on the new path yet, recreating the WireGuard peer"

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingOnce sends one echo (the system's ping, as an application would)
// and returns its round trip, or fails the test: the echo must not be
// dropped while the path is set up.
func pingOnce(t *testing.T, from *meshlab.Agent, ip string) time.Duration {
	t.Helper()
	return pingOnceWithin(t, from, ip, 3)
}

// pingOnceWithin is pingOnce waiting up to waitS seconds for the reply.
func pingOnceWithin(t *testing.T, from *meshlab.Agent, ip string, waitS int) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(waitS+10)*time.Second)
	defer cancel()
	out, err := from.Host.Run(ctx, "ping", "-n", "-c", "1", "-W", strconv.Itoa(waitS), ip)
	if err != nil {
		t.Fatalf("%s: the first packet to a lazy peer was lost: %v\n%s", from.Name, err, out)
	}
	m := pingTime.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no round trip in ping's output:\n%s", out)
	}
	ms, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(ms * float64(time.Millisecond))
}

// TestLazyFirstPacket: the first packet to an idle peer is queued while
// the path is set up, not dropped: a single echo gets its reply, within
// 1 s, over the direct path that the echo made.
func TestLazyFirstPacket(t *testing.T) {
	a, b, bIP := lazyPair(t, "10m")
	rtt := pingOnce(t, a, bIP)
	t.Logf("first echo to idle %s answered after %v", b.Name, rtt)
	if rtt >= time.Second {
		t.Errorf("first packet to a lazy peer took %v, want < 1 s", rtt)
	}
	// The first handshake must get through: a lost one costs the first
	// packet handshakeGrace (400 ms) and a recreated WireGuard peer.
	for _, x := range []*meshlab.Agent{a, b} {
		if strings.Contains(x.Proc.Log(), handshakeRetryLine) {
			t.Errorf("%s: the first WireGuard handshake was lost and the peer recreated (%q in its log); first echo after %v", x.Name, handshakeRetryLine, rtt)
		}
	}
	p, err := meshlab.WaitPath(t.Context(), a, b.Name, "direct", 5*time.Second)
	if err != nil {
		t.Fatalf("after the first packet: %v", err)
	}
	t.Logf("%s → %s: %s, %s→%s, set up in %d ms", a.Name, b.Name, p.Path, p.LocalType, p.RemoteType, p.DirectAfterMs)
	// The relay lane of an on-demand peer waits for the direct one to
	// fail: a direct path costs no relay allocation.
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if q := st.Peer(b.Name); q != nil && q.Relay != nil {
		t.Errorf("direct on-demand path holds a relay: %+v", q.Relay)
	}
}

// TestLazyIdleTeardown: a path with no traffic for --lazy-idle is torn
// down (status idle, no WireGuard peer) and comes back on the next packet.
func TestLazyIdleTeardown(t *testing.T) {
	const idle = 4 * time.Second
	a, b, bIP := lazyPair(t, idle.String())
	pingOnce(t, a, bIP)
	if _, err := meshlab.WaitPath(t.Context(), a, b.Name, "direct", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Both sides see no traffic from here (WireGuard keepalives and ICE
	// consent checks are not traffic) and tear the path down.
	start := time.Now()
	for _, x := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
		p, err := meshlab.WaitPeer(t.Context(), x[0], x[1].Name, idle+10*time.Second, func(p *meshlab.PeerStatus) error {
			if p.Path != "idle" {
				return fmt.Errorf("path %s (%s)", p.Path, p.Reason)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: path to %s not torn down after %v idle: %v", x[0].Name, x[1].Name, idle, err)
		}
		st, err := x[0].Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.WireGuardPeers) != 0 {
			t.Errorf("%s: idle path still has a WireGuard peer: %v", x[0].Name, st.WireGuardPeers)
		}
		t.Logf("%s: %s idle after %v (%s)", x[0].Name, x[1].Name, time.Since(start).Round(time.Second), p.Reason)
	}
	// From the other side this time, and over the IPv6 overlay: the path
	// comes back on demand.
	a6 := overlayIP6(t, a)
	rtt := pingOnce(t, b, a6.String())
	t.Logf("after the teardown, %s's first echo to %v answered in %v", b.Name, a6, rtt)
	if _, err := meshlab.WaitPath(t.Context(), b, a.Name, "direct", 5*time.Second); err != nil {
		t.Fatalf("path did not come back: %v", err)
	}
	if _, err := meshlab.WaitPath(t.Context(), a, b.Name, "direct", 5*time.Second); err != nil {
		t.Fatalf("path did not come back: %v", err)
	}
}

// TestLazyRelayed: between two symmetric NATs (no direct path without a
// port mapping) an on-demand peer's relay session starts once the direct
// one has not come up: the first echo still gets its reply, through the
// relay, having waited in the queue.
func TestLazyRelayed(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	a := addSiteAgent(t, lab, coord, "lsa", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "lsb", natlab.Symmetric)
	for _, x := range []*meshlab.Agent{a, b} {
		x.ExtraArgs = append(x.ExtraArgs, "--lazy-peers", "on", "--no-portmap")
	}
	startOnline(t, key, a, b)
	for _, x := range []*meshlab.Agent{a, b} {
		waitLog(t, x, `msg="local network"`, 20*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := meshlab.WaitPath(t.Context(), a, b.Name, "idle", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	rtt := pingOnceWithin(t, a, overlayIP(t, b), 9)
	t.Logf("first echo to idle %s (symmetric NATs) answered after %v", b.Name, rtt)
	p, err := meshlab.WaitConnected(t.Context(), a, b.Name, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s → %s: %s %+v", a.Name, b.Name, p.Path, p.Relay)
}

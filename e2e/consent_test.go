package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// stunCounter counts the STUN messages a site's router forwards between
// its LAN and one peer address, both ways together: UDP whose payload
// carries the STUN magic cookie at offset 4 (so WireGuard's packets do not
// count). Removed when the test ends.
type stunCounter struct {
	router *natlab.Host
	table  string
}

func countSTUN(t *testing.T, router *natlab.Host, peer netip.Addr) *stunCounter {
	t.Helper()
	c := &stunCounter{router: router, table: "stun_" + strings.ReplaceAll(peer.String(), ".", "_")}
	script := fmt.Sprintf(`table ip %[1]s {
	chain forward {
		type filter hook forward priority 10; policy accept;
		ip daddr %[2]s meta l4proto udp @th,96,32 0x2112a442 counter
		ip saddr %[2]s meta l4proto udp @th,96,32 0x2112a442 counter
	}
}
`, c.table, peer)
	if out, err := router.Run(t.Context(), "sh", "-c", "nft -f - <<'EOF'\n"+script+"EOF\n"); err != nil {
		t.Fatalf("STUN counter on %s: %v\n%s", router.Name, err, out)
	}
	t.Cleanup(func() { _, _ = router.Run(context.Background(), "nft", "delete", "table", "ip", c.table) })
	return c
}

// read returns the STUN messages counted so far, both ways.
func (c *stunCounter) read(t *testing.T) uint64 {
	t.Helper()
	text, err := c.router.Run(t.Context(), "nft", "list", "table", "ip", c.table)
	if err != nil {
		t.Fatalf("read STUN counter on %s: %v", c.router.Name, err)
	}
	var n uint64
	for _, m := range nftCounter.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n
}

// waitRelayReady waits until a has a relay available to fall back to.
func waitRelayReady(t *testing.T, a *meshlab.Agent) {
	t.Helper()
	ctx := t.Context()
	if err := natlab.Poll(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		for _, r := range st.Self.Relays {
			if r.Available {
				return nil
			}
		}
		return fmt.Errorf("no relay available yet: %+v", st.Self.Relays)
	}); err != nil {
		t.Fatal(err)
	}
}

// consentPair sets up two agents behind a full-cone and a port-restricted
// NAT with a working direct path between them and a relay to fall back to;
// b runs bBin when it is set (an older agent).
func consentPair(t *testing.T, prefix, bBin string) (lab *natlab.Lab, siteA, siteB *natlab.Site, a, b *meshlab.Agent) {
	t.Helper()
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	var err error
	if siteA, err = lab.AddSite(prefix+"a", natlab.FullCone); err != nil {
		t.Fatal(err)
	}
	if siteB, err = lab.AddSite(prefix+"b", natlab.PortRestricted); err != nil {
		t.Fatal(err)
	}
	if a, err = meshlab.NewAgent(coord, siteA.Host, prefix+"a"); err != nil {
		t.Fatal(err)
	}
	coordB := coord
	if bBin != "" {
		c := *coord
		c.Bins.Agent = bBin
		coordB = &c
	}
	if b, err = meshlab.NewAgent(coordB, siteB.Host, prefix+"b"); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	startOnline(t, key, a, b)
	if out, err := pingUntil(ctx, a, overlayIP(t, b), 30*time.Second); err != nil {
		t.Fatalf("first ping: %v\n%s", err, out)
	}
	waitBothPath(t, a, b, "direct", time.Now(), 20*time.Second)
	waitRelayReady(t, a)
	waitRelayReady(t, b)
	return lab, siteA, siteB, a, b
}

// TestConsentIdleQuiet (issue 16): an idle direct tunnel's path is checked
// rarely, not every second from both sides, and a direct path that died
// while the tunnel was idle is noticed by the first packet that uses it:
// traffic gets through over the relay within seconds, not at the next idle
// check.
func TestConsentIdleQuiet(t *testing.T) {
	_, siteA, siteB, a, b := consentPair(t, "ci", "")
	ctx := t.Context()
	ipB := overlayIP(t, b)

	// The first ping's activity ages out (5 s), then 22 s of idle
	// tunnel: a check every 20 s from each side, 4 messages a round.
	// pion's keepalives sent 4 a second.
	stun := countSTUN(t, siteA.Router, siteB.Router.IP)
	time.Sleep(7 * time.Second)
	before := stun.read(t)
	const idle = 22 * time.Second
	time.Sleep(idle)
	n := stun.read(t) - before
	t.Logf("STUN messages between the sites in %v of idle tunnel: %d", idle, n)
	if n > 12 {
		t.Errorf("%d STUN messages in %v of idle tunnel, want at most 12 (a check every 20 s from each side)", n, idle)
	}
	for _, side := range []struct {
		from *meshlab.Agent
		to   string
	}{{a, b.Name}, {b, a.Name}} {
		if p := peerStatus(t, side.from, side.to); p.Path != "direct" {
			t.Errorf("%s -> %s: path %s after the idle window, want direct", side.from.Name, side.to, p.Path)
		}
	}

	// The direct path dies while idle; a second later a packet wants it.
	undo, err := cutDirect(ctx, siteA.Router, siteB.Router.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if undo != nil {
			_ = undo()
		}
	}()
	time.Sleep(time.Second)
	if p := peerStatus(t, a, b.Name); p.Path != "direct" {
		t.Logf("%s already saw the cut before the first packet: %s (%s)", a.Name, p.Path, p.Reason)
	}
	useAt := time.Now()
	pinger, err := a.Host.Start("ping", "-n", "-D", "-i", "0.2", "-W", "1", "-c", "100", ipB)
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop(2 * time.Second)
	p, err := meshlab.WaitPath(ctx, a, b.Name, "relay", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	onRelay := time.Since(useAt)
	t.Logf("%s on the relay %v after the first packet on the dead idle path (%s)", a.Name, onRelay.Round(10*time.Millisecond), p.Reason)
	if onRelay > pathSwitchLimit {
		t.Errorf("%s moved to the relay %v after the first packet on the dead idle path, want about %v (limit %v)", a.Name, onRelay.Round(10*time.Millisecond), pathSwitchPromise, pathSwitchLimit)
	}
	var replied time.Duration
	if err := natlab.Poll(ctx, 15*time.Second, 100*time.Millisecond, func() error {
		e := parseEchoes(pinger.Log())
		for _, at := range e.replies {
			if replied == 0 || at.Sub(useAt) < replied {
				replied = at.Sub(useAt)
			}
		}
		if len(e.replies) == 0 {
			return fmt.Errorf("no echo reply yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("no echo reply over the relay: %v\n%s", err, pinger.Log())
	}
	t.Logf("first echo reply %v after the first packet", replied.Round(10*time.Millisecond))
	if replied > pathSwitchLimit+time.Second {
		t.Errorf("first echo reply %v after the first packet on the dead idle path, want within %v", replied.Round(10*time.Millisecond), pathSwitchLimit+time.Second)
	}
	if _, err := meshlab.WaitPath(ctx, b, a.Name, "relay", 10*time.Second); err != nil {
		t.Errorf("the other side: %v", err)
	}

	// Restored: the tunnel is active, so the direct path is back at the
	// next check.
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	undo = nil
	back := waitBothPath(t, a, b, "direct", time.Now(), 30*time.Second)
	t.Logf("both back on the direct path at %v", back.Format(time.TimeOnly))
}

// spoofSTUN is a stranger's tool: it sends STUN Binding indications (no
// credentials, random transaction IDs) every 100 ms from a forged source
// address, for secs seconds.
const spoofSTUN = `
import os, socket, struct, sys, time
src, sport, dst, dport, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
end = time.time() + secs
while time.time() < end:
    stun = struct.pack('!HHI', 0x0011, 0, 0x2112A442) + os.urandom(12)
    udp = struct.pack('!HHHH', sport, dport, 8 + len(stun), 0) + stun
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
    time.sleep(0.1)
`

// TestConsentSpoofKeepsNothingAlive (attack): a stranger who forges
// packets from the peer's address cannot keep a dead direct path alive.
// The path's liveness comes only from authenticated answers to our own
// checks; before, pion counted any STUN message from the selected remote
// address, a Binding indication with no credentials too, and the agent
// never fell back to the relay.
func TestConsentSpoofKeepsNothingAlive(t *testing.T) {
	lab, siteA, siteB, a, b := consentPair(t, "cs", "")
	ctx := t.Context()
	spoofer, err := lab.AddPublicHost("csspoof", "203.0.113.50")
	if err != nil {
		t.Fatal(err)
	}
	peerEP, err := netip.ParseAddrPort(peerStatus(t, a, b.Name).Endpoint) // b as a sees it
	if err != nil {
		t.Fatal(err)
	}
	ourEP, err := netip.ParseAddrPort(peerStatus(t, b, a.Name).Endpoint) // a as b sees it
	if err != nil {
		t.Fatal(err)
	}
	pinger, err := a.Host.Start("ping", "-n", "-i", "0.2", "-W", "1", "-c", "150", overlayIP(t, b))
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop(2 * time.Second)
	spoof, err := spoofer.Start("python3", "-c", spoofSTUN, peerEP.Addr().String(), strconv.Itoa(int(peerEP.Port())),
		ourEP.Addr().String(), strconv.Itoa(int(ourEP.Port())), "25")
	if err != nil {
		t.Fatal(err)
	}
	defer spoof.Stop(time.Second)
	time.Sleep(time.Second)
	// The cut is on b's side: the forged packets reach a unhindered, on
	// a's NAT mapping toward b.
	undo, err := cutDirect(ctx, siteB.Router, siteA.Router.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = undo() }()
	cutAt := time.Now()
	p, err := meshlab.WaitPath(ctx, a, b.Name, "relay", 15*time.Second)
	if err != nil {
		t.Fatalf("%s kept the dead direct path while a stranger forged STUN from %s: %v", a.Name, peerEP, err)
	}
	took := time.Since(cutAt)
	t.Logf("%s on the relay %v after the cut, forged STUN from %s notwithstanding (%s)", a.Name, took.Round(10*time.Millisecond), peerEP, p.Reason)
	if took > pathSwitchLimit {
		t.Errorf("%s fell back %v after the cut, want about %v (limit %v)", a.Name, took.Round(10*time.Millisecond), pathSwitchPromise, pathSwitchLimit)
	}
	if out := spoof.Log(); strings.Contains(out, "Error") {
		t.Fatalf("the forger failed, the test proves nothing:\n%s", out)
	}
}

// TestConsentMixedVersions: an agent of this version and one of an older
// version that still sends pion's consent checks every second and takes a
// path for dead after 3 s without STUN from the peer
// (MESHVPN_OLD_AGENT=path/to/old/meshvpn, else built from
// consentOldCommit in this clone's history). The old side
// must keep its idle direct path (our agent answers its checks; its own
// are not needed by us), and a cut must move both to the relay in time.
func TestConsentMixedVersions(t *testing.T) {
	oldBin := oldAgent(t, consentOldCommit)
	_, siteA, siteB, a, b := consentPair(t, "cm", oldBin)
	ctx := t.Context()
	ipB := overlayIP(t, b)

	stun := countSTUN(t, siteA.Router, siteB.Router.IP)
	time.Sleep(15 * time.Second)
	t.Logf("STUN messages in 15 s of idle tunnel, old and new side: %d", stun.read(t))
	for _, side := range []*meshlab.Agent{a, b} {
		if strings.Contains(side.Proc.Log(), "direct path lost") {
			t.Errorf("%s lost the idle direct path:\n%s", side.Name, side.Proc.Log())
		}
	}
	waitBothPath(t, a, b, "direct", time.Now(), time.Second)

	pinger, err := a.Host.Start("ping", "-n", "-i", "0.2", "-W", "1", "-c", "100", ipB)
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop(2 * time.Second)
	time.Sleep(2 * time.Second)
	undo, err := cutDirect(ctx, siteA.Router, siteB.Router.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = undo() }()
	cutAt := time.Now()
	fell := waitBothPath(t, a, b, "relay", cutAt, 15*time.Second).Sub(cutAt)
	t.Logf("both on the relay %v after the cut", fell.Round(10*time.Millisecond))
	if fell > pathSwitchLimit {
		t.Errorf("both on the relay %v after the cut, want about %v (limit %v)", fell.Round(10*time.Millisecond), pathSwitchPromise, pathSwitchLimit)
	}
}

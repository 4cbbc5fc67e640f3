package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// The peer relay of these tests: a public host running `meshvpn up
// --relay-server`, with the coordinator's embedded relay off.
const (
	peerRelayIP   = "203.0.113.60"
	peerRelayAddr = peerRelayIP + ":3478"
)

// newPeerRelayLab starts a coordinator without any relay of its own
// (--embedded-turn=false, no --turn-url) and the peer relay node "prelay",
// online.
func newPeerRelayLab(t testing.TB) (*natlab.Lab, *meshlab.Coordinator, *meshlab.Agent, string) {
	t.Helper()
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--embedded-turn=false"))
	key := authKey(t, coord, true)
	h, err := lab.AddPublicHost("prelay", peerRelayIP)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := meshlab.NewAgent(coord, h, "prelay")
	if err != nil {
		t.Fatal(err)
	}
	rel.ExtraArgs = []string{"--relay-server", "--relay-listen", peerRelayAddr, "--relay-public", peerRelayAddr}
	if err := rel.Up(t.Context(), key, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return lab, coord, rel, key
}

// TestPeerRelayPair relays two symmetric sites through a member's peer
// relay, the mesh's only relay: both report path relay through it over UDP
// (status names the relay node), ping and ssh work across it, and `usage`
// lists the relay with the bytes of a measured transfer within 5 %. A site
// that blocks UDP reaches them through the peer relay over TCP.
func TestPeerRelayPair(t *testing.T) {
	lab, coord, rel, key := newPeerRelayLab(t)
	a := addSiteAgent(t, lab, coord, "psym1", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "psym2", natlab.Symmetric)
	ctx := t.Context()
	startOnline(t, key, a, b)
	relSt, err := rel.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 60*time.Second); err != nil {
		t.Fatalf("overlay ping through the peer relay failed: %v\n%s", err, out)
	}
	for _, pair := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
		checkRelayed(t, pair[0], pair[1], "udp", peerRelayIP)
		st, err := pair[0].Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Peer(pair[1].Name); p.Relay == nil || p.Relay.Node != relSt.Self.ID {
			t.Errorf("%s -> %s: relay %+v, want the peer relay node %d named", pair[0].Name, pair[1].Name, p.Relay, relSt.Self.ID)
		}
		for _, r := range st.Self.Relays {
			if strings.Contains(r.URL, meshlab.CoordinatorIP) {
				t.Errorf("%s was offered the embedded relay %s although --embedded-turn=false", pair[0].Name, r.URL)
			}
		}
	}
	// A measured transfer shows in usage, as the relay node reports it:
	// counts from reports made after the traffic before, and after, it.
	// The window between the two reports spans up to a minute of ICE
	// consent checks and keepalives (about 2 packets a second, seen: 61
	// over 1000 pings), so the transfer is large enough to dwarf them.
	relay := coordinator.PeerRelayPrefix + rel.Name
	before := waitPeerUsage(t, coord, relay, []string{a.Name, b.Name}, time.Now())
	const count = 4000
	out, err := a.Host.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.002", "-s", strconv.Itoa(usagePingPayload), "-w", "60", ipB)
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	sent, recv := pingCounts(t, out)
	after := waitPeerUsage(t, coord, relay, []string{a.Name}, time.Now())
	d := after[a.Name].minus(before[a.Name])
	want, wantIn := sent*relayedPingBytes(usagePingPayload), recv*relayedPingBytes(usagePingPayload)
	t.Logf("ping sent %d, received %d; %s counted for %s: %v (want out %d bytes, in %d)", sent, recv, relay, a.Name, d, want, wantIn)
	if !within5(d[2], want) || !within5(d[3], sent) {
		t.Errorf("%s out: %d bytes %d packets, want %d bytes %d packets within 5%%", a.Name, d[2], d[3], want, sent)
	}
	if !within5(d[0], wantIn) || !within5(d[1], recv) {
		t.Errorf("%s in: %d bytes %d packets, want %d bytes %d packets within 5%%", a.Name, d[0], d[1], wantIn, recv)
	}
	if out, err := coord.Admin(ctx, "usage"); err == nil {
		t.Logf("usage:\n%s", out)
	}

	sshd, err := meshlab.StartSSHD(ctx, b.Host, filepath.Join(lab.Dir, "sshd-psym2"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sshd.Run(ctx, a.Host, ipB, "ip netns identify"); err != nil || strings.TrimSpace(out) != b.Host.NS {
		t.Fatalf("ssh over the peer relay: %v\n%s", err, out)
	}

	ub := addSiteAgent(t, lab, coord, "pub1", natlab.UDPBlocked)
	startOnline(t, key, ub)
	if out, err := pingUntil(ctx, ub, ipB, 60*time.Second); err != nil {
		t.Fatalf("overlay ping from a UDP-blocked site through the peer relay failed: %v\n%s", err, out)
	}
	checkRelayed(t, ub, b, "tcp", peerRelayIP)
	checkRelayed(t, b, ub, "udp", peerRelayIP)
}

func within5(got, want uint64) bool {
	g, w := float64(got), float64(want)
	return g >= w*0.95 && g <= w*1.05
}

// waitPeerUsage polls `usage --json` until every node in names has a row
// on relay from a report made after since (the relay reports every 30 s),
// and returns the counts.
func waitPeerUsage(t *testing.T, coord *meshlab.Coordinator, relay string, names []string, since time.Time) map[string]usageVec {
	t.Helper()
	var got map[string]usageVec
	var last string
	err := natlab.Poll(t.Context(), 75*time.Second, time.Second, func() error {
		out, err := coord.Admin(t.Context(), "usage", "--json")
		if err != nil {
			return fmt.Errorf("usage: %v", err)
		}
		last = out
		var rep coordinator.UsageReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			return natlab.Fatal(fmt.Errorf("usage --json: %v", err))
		}
		got = map[string]usageVec{}
		for _, r := range rep.Rows {
			if r.Relay == relay && r.Reported && r.BytesIn != nil && r.ReportedAt != nil && r.ReportedAt.After(since) {
				got[r.Node] = usageVec{*r.BytesIn, *r.PacketsIn, *r.BytesOut, *r.PacketsOut}
			}
		}
		for _, n := range names {
			if _, ok := got[n]; !ok {
				return fmt.Errorf("no row for %s on %s reported after %s", n, relay, since.Format(time.RFC3339Nano))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nlast usage:\n%s", err, last)
	}
	return got
}

// TestPeerRelayRefusesAbuse plays a member that uses the credential the
// coordinator gave it for a peer relay to reach what the relay's host
// must protect: a UDP service of the relay host inside its relay port
// range (no allocation there) and outside it, a third party on the
// internet, and a private address. Each is refused; the control (two of
// its own allocations on the relay) shows a silence means a refusal.
func TestPeerRelayRefusesAbuse(t *testing.T) {
	lab, coord, rel, key := newPeerRelayLab(t)
	m := newPeerRelayMember(t, lab, coord, "pmallory", "203.0.113.51", key)
	inRange := udpEcho(t, rel.Host, peerRelayIP+":55555") // the relay range is 49152-65535
	outside := udpEcho(t, rel.Host, peerRelayIP+":7777")
	victim, err := lab.AddPublicHost("pvictim", "203.0.113.70")
	if err != nil {
		t.Fatal(err)
	}
	third := udpEcho(t, victim, "203.0.113.70:7777")

	relayed, relayed2 := relayBetweenOwn(t, m)

	for _, target := range []string{peerRelayIP + ":55555", peerRelayIP + ":7777", "203.0.113.70:7777", "192.168.1.1:7777"} {
		to, _ := net.ResolveUDPAddr("udp4", target)
		var echoed string
		for i := 0; i < 4 && echoed == ""; i++ {
			relayed.WriteTo([]byte("hello"), to) // a refused permission is an error here
			echoed = readWithin(relayed, 500*time.Millisecond)
		}
		if echoed != "" {
			t.Errorf("the peer relay relayed to %s: the member got back %q", target, echoed)
		}
	}
	if n := inRange.Load(); n > 0 {
		t.Errorf("a UDP service of the relay host in the relay port range got %d packets", n)
	}
	if n := outside.Load(); n > 0 {
		t.Errorf("a UDP service of the relay host outside the relay port range got %d packets", n)
	}
	if n := third.Load(); n > 0 {
		t.Errorf("a third party got %d packets through the peer relay", n)
	}

	// Removed from the mesh, the member loses what it holds on the peer
	// relay at once, not when its allocations expire (2 min).
	if out, err := coord.Admin(t.Context(), "nodes", "remove", m.name); err != nil {
		t.Fatalf("remove %s: %v\n%s", m.name, err, out)
	}
	err = natlab.Poll(t.Context(), 10*time.Second, 500*time.Millisecond, func() error {
		relayed.WriteTo([]byte("still here"), relayed2.LocalAddr())
		if got := readWithin(relayed2, 300*time.Millisecond); got != "" {
			return fmt.Errorf("the removed member still relays between its allocations: %q", got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// newPeerRelayMember registers a node at ip (agent stopped) and returns it
// with its credential for the peer relay, once the coordinator lists it.
func newPeerRelayMember(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, name, ip, key string) *relayMember {
	t.Helper()
	a := registerStopped(t, lab, coord, name, ip, key)
	var m *relayMember
	err := natlab.Poll(t.Context(), 30*time.Second, time.Second, func() error {
		relays, err := streamRelays(t.Context(), a)
		if err != nil {
			return err
		}
		for _, r := range relays {
			if r.URL == "turn:"+peerRelayAddr+"?transport=udp" && r.Node != 0 {
				m = &relayMember{name: name, host: a.Host, server: peerRelayAddr, relay: r}
				return nil
			}
		}
		return fmt.Errorf("peer relay not listed: %+v", relays)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPeerRelayChosenByRTT offers two peer relays, the embedded relay off:
// "pfar" behind a full-cone NAT with 30 ms of delay each way, listed first
// (it joins first), and "pnear" on a public host. Two symmetric sites
// measure both and relay through the near one; status marks it chosen and
// names it on the relayed path. Before the choice used RTT it took the
// first working relay: "rsym1 chose 203.0.113.101:3478 (node 1, 93.1 ms),
// want pnear (node 2)".
func TestPeerRelayChosenByRTT(t *testing.T) {
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--embedded-turn=false"))
	key := authKey(t, coord, true)
	ctx := t.Context()
	farSite, err := lab.AddSiteSpec("pfar", natlab.SiteSpec{Kind: natlab.FullCone, WANDelay: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	far, err := meshlab.NewAgent(coord, farSite.Host, "pfar")
	if err != nil {
		t.Fatal(err)
	}
	farAddr := farSite.PublicIP().String() + ":3478"
	far.ExtraArgs = []string{"--relay-server", "--relay-listen", ":3478", "--relay-public", farAddr}
	if err := far.Up(ctx, key, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	h, err := lab.AddPublicHost("pnear", peerRelayIP)
	if err != nil {
		t.Fatal(err)
	}
	near, err := meshlab.NewAgent(coord, h, "pnear")
	if err != nil {
		t.Fatal(err)
	}
	near.ExtraArgs = []string{"--relay-server", "--relay-listen", peerRelayAddr, "--relay-public", peerRelayAddr}
	if err := near.Up(ctx, key, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	a := addSiteAgent(t, lab, coord, "rsym1", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "rsym2", natlab.Symmetric)
	startOnline(t, key, a, b)
	nearSt, err := near.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Both relays measured, the near one chosen.
	for _, ag := range []*meshlab.Agent{a, b} {
		err := natlab.Poll(ctx, 40*time.Second, 500*time.Millisecond, func() error {
			st, err := ag.Status(ctx)
			if err != nil {
				return err
			}
			var measured int
			var chosen string
			for _, r := range st.Self.Relays {
				if r.Transport == "udp" && r.Available {
					measured++
				}
				if r.Chosen {
					chosen = fmt.Sprintf("%s (node %d, %.1f ms)", r.Server, r.Node, r.RTTms)
					if r.Node != nearSt.Self.ID {
						return natlab.Fatal(fmt.Errorf("%s chose %s, want pnear (node %d); relays %+v", ag.Name, chosen, nearSt.Self.ID, st.Self.Relays))
					}
				}
			}
			if measured < 2 || chosen == "" {
				return fmt.Errorf("%s: %d relays measured over UDP, chosen %q", ag.Name, measured, chosen)
			}
			t.Logf("%s: relays %+v", ag.Name, st.Self.Relays)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if out, err := pingUntil(ctx, a, overlayIP(t, b), 60*time.Second); err != nil {
		t.Fatalf("overlay ping: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "udp", peerRelayIP)
	checkRelayed(t, b, a, "udp", peerRelayIP)
}

// TestPeerRelayBehindFullCone runs the mesh's only relay on a host behind
// a full-cone NAT (its router forwards every UDP port to it), offered at
// the router's address: two symmetric sites relay through it. Their two
// allocations on it send to each other at the router's address, which
// the relay's host cannot reach through its own router (no hairpin NAT):
// the relay delivers between its own allocations itself.
func TestPeerRelayBehindFullCone(t *testing.T) {
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--embedded-turn=false"))
	key := authKey(t, coord, true)
	ctx := t.Context()
	site, err := lab.AddSite("pfc", natlab.FullCone)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := meshlab.NewAgent(coord, site.Host, "pfc")
	if err != nil {
		t.Fatal(err)
	}
	addr := site.PublicIP().String() + ":3478"
	rel.ExtraArgs = []string{"--relay-server", "--relay-listen", ":3478", "--relay-public", addr}
	if err := rel.Up(ctx, key, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	a := addSiteAgent(t, lab, coord, "fsym1", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "fsym2", natlab.Symmetric)
	startOnline(t, key, a, b)
	if out, err := pingUntil(ctx, a, overlayIP(t, b), 60*time.Second); err != nil {
		t.Fatalf("overlay ping through a peer relay behind a full-cone NAT: %v\n%s", err, out)
	}
	checkRelayed(t, a, b, "udp", site.PublicIP().String())
	checkRelayed(t, b, a, "udp", site.PublicIP().String())
}

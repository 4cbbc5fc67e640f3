package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// A member may relay to the relay's own address only within the relay
// port range: a UDP service on the coordinator's host stays out of reach.
func TestRelayRefusesOwnHost(t *testing.T) {
	lab, coord := newLab(t)
	m := newRelayMember(t, lab, coord, "mallory", "203.0.113.50", authKey(t, coord, false))
	const service = meshlab.CoordinatorIP + ":7777" // outside the lab's relay range 50000-50999
	hits := udpEcho(t, coord.Host, service)

	// The control: another allocation on the same address, inside the
	// range, is reachable (so a silence below means a refusal).
	relayed, _ := relayBetweenOwn(t, m)

	to, _ := net.ResolveUDPAddr("udp4", service)
	// Several sends over two seconds: pion's client moves from Send
	// indications to a bound channel, and both must be stopped.
	var echoed string
	for i := 0; i < 4 && echoed == ""; i++ {
		if _, err := relayed.WriteTo([]byte("hello host"), to); err != nil {
			t.Fatalf("send to %s: %v", service, err)
		}
		echoed = readWithin(relayed, 500*time.Millisecond)
	}
	if echoed == "" {
		echoed = readWithin(relayed, 2*time.Second)
	}
	if n := hits.Load(); n > 0 || echoed != "" {
		t.Fatalf("the relay reached a UDP service on its own host %s: it got %d packets, the member got back %q", service, n, echoed)
	}
}

// RFC 6062 TCP allocations are refused; UDP allocations over a TCP
// connection (what agents behind UDP-blocking firewalls use) still work.
func TestRelayRefusesTCPAllocation(t *testing.T) {
	lab, coord := newLab(t)
	m := newRelayMember(t, lab, coord, "mallory", "203.0.113.50", authKey(t, coord, false))
	alloc, err := m.tcpClient(t).AllocateTCP()
	if err == nil {
		alloc.Close()
		t.Fatalf("TCP allocation granted at %s: the relay is a TCP proxy", alloc.Addr())
	}
	t.Logf("TCP allocation refused: %v", err)
	if _, err := allocate(t, m.tcpClient(t)); err != nil {
		t.Fatalf("UDP allocation over TCP refused: %v", err)
	}
}

// One member cannot take the relay's ports: a flood of allocations with one
// credential stops at the quota, and another node still allocates.
func TestRelayAllocationQuota(t *testing.T) {
	const ports = 150 // a range the flood could exhaust without a quota
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--relay-range", "50000-50149"))
	key := authKey(t, coord, true)
	m := newRelayMember(t, lab, coord, "mallory", "203.0.113.50", key)
	honest := newRelayMember(t, lab, coord, "honest", "203.0.113.51", key)

	granted, firstRefusal := 0, ""
	start := time.Now()
	for range ports {
		if _, err := allocate(t, m.client(t)); err != nil {
			if firstRefusal == "" {
				firstRefusal = err.Error()
			}
			continue
		}
		granted++
	}
	t.Logf("flood: %d of %d allocations granted to one credential in %v; first refusal: %s", granted, ports, time.Since(start).Round(time.Millisecond), firstRefusal)
	// The quota for 2 members is 16 (README, Relays); 8 is what an agent
	// with a peer or two needs.
	if granted > 16 || granted < 8 {
		t.Errorf("flood: %d allocations granted to one credential, want the quota (8-16)", granted)
	}
	if firstRefusal != "" && !strings.Contains(firstRefusal, "486") {
		t.Errorf("refusal %q: want 486 (Allocation Quota Reached)", firstRefusal)
	}
	if _, err := allocate(t, honest.client(t)); err != nil {
		t.Fatalf("honest node refused after the flood: %v", err)
	}
}

// A removed node's allocation stops relaying at once, although its client
// holds it and its lifetime has not run out.
func TestRelayRemovedNodeLosesAllocation(t *testing.T) {
	lab, coord := newLab(t)
	m := newRelayMember(t, lab, coord, "mallory", "203.0.113.50", authKey(t, coord, false))
	peer, err := lab.AddPublicHost("peer", "203.0.113.60")
	if err != nil {
		t.Fatal(err)
	}
	hits := udpEcho(t, peer, "203.0.113.60:9000")
	to := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 60), Port: 9000}

	relayed, err := allocate(t, m.client(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relayed.WriteTo([]byte("before"), to); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(relayed, 5*time.Second); got != "before" {
		t.Fatalf("relaying to the peer before the removal: got %q", got)
	}
	if _, err := coord.Admin(t.Context(), "nodes", "remove", m.name); err != nil {
		t.Fatal(err)
	}
	before := hits.Load()
	var echoed string
	for i := 0; i < 6 && echoed == ""; i++ {
		relayed.WriteTo([]byte("after"), to)
		echoed = readWithin(relayed, 500*time.Millisecond)
	}
	if n := hits.Load() - before; n > 0 || echoed != "" {
		t.Fatalf("after the removal the node's allocation still relayed %d packets to the peer (reply %q)", n, echoed)
	}
}

// Allocations over UDP live on refreshes: with a 10 s lifetime, two agents
// relaying through the embedded server keep their allocation over several
// lifetimes (pion's client refreshes at half of it), while the allocations
// of a client that vanished without releasing them are gone within a
// lifetime, and its quota with them.
func TestRelayAllocationLifetime(t *testing.T) {
	const lifetime = 10 * time.Second
	lab, coord := newLabWith(t, meshlab.StartCoordinatorArgs("--turn-allocation-lifetime", lifetime.String()))
	ctx := t.Context()
	key := authKey(t, coord, true)
	m := newRelayMember(t, lab, coord, "mallory", "203.0.113.50", key)
	a := addSiteAgent(t, lab, coord, "sym1", natlab.Symmetric)
	b := addSiteAgent(t, lab, coord, "sym2", natlab.Symmetric)
	startOnline(t, key, a, b)
	ipB := overlayIP(t, b)
	if out, err := pingUntil(ctx, a, ipB, 40*time.Second); err != nil {
		t.Fatalf("overlay ping: %v\n%s", err, out)
	}
	p, err := meshlab.WaitPath(ctx, a, b.Name, "relay", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := p.Relay.Allocation

	// The vanished client: allocations up to the quota, then its socket
	// closes without a word.
	var socks []net.PacketConn
	for range 40 {
		c, pc := m.clientConn(t)
		if _, err := allocate(t, c); err != nil {
			break
		}
		socks = append(socks, pc)
	}
	if _, err := allocate(t, m.client(t)); err == nil {
		t.Fatalf("allocation granted after %d: no quota", len(socks))
	}
	for _, pc := range socks {
		pc.Close()
	}
	abandoned := time.Now()
	var freed time.Duration
	err = natlab.Poll(ctx, 3*lifetime, time.Second, func() error {
		if _, err := allocate(t, m.client(t)); err != nil {
			return err
		}
		freed = time.Since(abandoned)
		return nil
	})
	if err != nil {
		t.Fatalf("%d abandoned allocations still hold the quota %v later: %v", len(socks), 3*lifetime, err)
	}
	t.Logf("%d abandoned allocations released after %v (lifetime %v)", len(socks), freed.Round(100*time.Millisecond), lifetime)

	if wait := 3*lifetime - time.Since(abandoned); wait > 0 {
		time.Sleep(wait)
	}
	if out, err := meshlab.PingIP(ctx, a, ipB, 3); err != nil {
		t.Fatalf("overlay ping after %v of relaying: %v\n%s", 3*lifetime, err, out)
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p = st.Peer(b.Name)
	if p == nil || p.Path != "relay" || p.Relay == nil {
		t.Fatalf("after three lifetimes the path to %s is %+v, want relay", b.Name, p)
	}
	if p.Relay.Allocation != first {
		t.Fatalf("after three lifetimes the allocation is %s (%s), want the first one %s kept by refreshes", p.Relay.Allocation, p.LastChange, first)
	}
}

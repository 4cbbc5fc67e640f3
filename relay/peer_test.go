package relay

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/relay/relaytest"
)

// TestRelayOnlyPeers: a peer relay (Config.OnlyPeers) relays only to its
// own allocations and to the addresses OnlyPeers names (the mesh's other
// relays): a member holding a credential cannot make it send to a third
// party on the internet, nor into the relay host's LAN. Without OnlyPeers
// the third party is granted: "permission to third party 203.0.113.7
// granted".
func TestRelayOnlyPeers(t *testing.T) {
	other := netip.MustParseAddr("198.51.100.20")
	_, addr := startRelayWith(t, Config{OnlyPeers: func(a netip.Addr) bool { return a == other }})
	user, pass := testCredential(testNode)
	c, _, err := relaytest.Allocate(t, addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"203.0.113.7":   false, // a third party
		"10.1.2.3":      false, // the relay host's LAN
		"127.0.0.1":     false, // the relay host itself, not its relay address
		"198.51.100.20": true,  // another relay of the mesh
		"127.0.0.2":     true,  // its own relay address: its allocations
	} {
		err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ip), Port: 50000})
		if got := err == nil; got != want {
			if got {
				t.Errorf("permission to third party %s granted", ip)
			} else {
				t.Errorf("permission to %s refused: %v", ip, err)
			}
		}
	}
}

// TestRelayReachesOnlyItsAllocationsOnItsHost: between two allocations of
// the relay packets flow; a socket of the relay's host in the relay port
// range that is not an allocation (the kernel's ephemeral ports overlap
// the range) gets nothing. Before the guard asked the allocation table:
// "a socket of the relay host at 127.0.0.1:40xxx got "probe"".
func TestRelayReachesOnlyItsAllocationsOnItsHost(t *testing.T) {
	_, addr := startRelay(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	ua, pa := testCredential(testNode)
	ub, pb := testCredential(testNode + 1)
	_, a, err := relaytest.Allocate(t, addr, ua, pa)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := relaytest.Allocate(t, addr, ub, pb)
	if err != nil {
		t.Fatal(err)
	}
	// Relay sockets bind 127.0.0.1 (advertised as 127.0.0.2).
	bAt := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.LocalAddr().(*net.UDPAddr).Port}
	aAt := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: a.LocalAddr().(*net.UDPAddr).Port}
	bystander := listenInRange(t, 40500, 40899)
	b.WriteTo([]byte("perm"), aAt) // b's permission for a
	time.Sleep(100 * time.Millisecond)
	a.WriteTo([]byte("hello"), bAt)
	a.WriteTo([]byte("probe"), bystander.LocalAddr())
	buf := make([]byte, 100)
	b.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := b.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("between two allocations: %q, %v", buf[:n], err)
	}
	bystander.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := bystander.ReadFrom(buf); err == nil {
		t.Errorf("a socket of the relay host at %s got %q", bystander.LocalAddr(), buf[:n])
	}
}

// TestRelayHairpin: a relay advertising an address that is not its host's
// (127.0.0.2 here, as a router's public address; its sockets bind
// 127.0.0.1) still relays between two of its allocations, each addressing
// the other at its advertised relayed address, both ways and over bound
// channels. Without the shortcut the packet goes to 127.0.0.2, where no
// relay socket listens: "b got nothing from a's relayed address".
func TestRelayHairpin(t *testing.T) {
	s, addr := startRelayWith(t, Config{Hairpin: true})
	ua, pa := testCredential(testNode)
	ub, pb := testCredential(testNode + 1)
	_, a, err := relaytest.Allocate(t, addr, ua, pa)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := relaytest.Allocate(t, addr, ub, pb)
	if err != nil {
		t.Fatal(err)
	}
	aAt, bAt := a.LocalAddr(), b.LocalAddr() // the advertised relayed addresses, 127.0.0.2:port
	if ip := aAt.(*net.UDPAddr).IP.String(); ip != "127.0.0.2" {
		t.Fatalf("relayed address %s, want the advertised 127.0.0.2", aAt)
	}
	b.WriteTo([]byte("perm"), aAt) // b's permission for a
	time.Sleep(100 * time.Millisecond)
	buf := make([]byte, 100)
	// Several rounds: pion's client moves from Send indications to a
	// bound channel (the fast path) after the first packets.
	for i := range 5 {
		msg := fmt.Sprintf("hello %d", i)
		a.WriteTo([]byte(msg), bAt)
		b.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("round %d: b got nothing from a's relayed address: %v", i, err)
		}
		if string(buf[:n]) != msg || from.String() != aAt.String() {
			t.Fatalf("round %d: b got %q from %s, want %q from %s", i, buf[:n], from, msg, aAt)
		}
		b.WriteTo([]byte("back"), aAt)
		a.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, from, err := a.ReadFrom(buf); err != nil || string(buf[:n]) != "back" || from.String() != bAt.String() {
			t.Fatalf("round %d: a got %q from %v (%v), want back from %s", i, buf[:n], from, err, bAt)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if n := s.FastChannels(); n == 0 {
		t.Error("no channel on the fast path: the rounds did not cover it")
	}
}

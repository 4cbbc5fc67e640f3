package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRelayIPv6Client is the relay half of "an IPv6-only host and an
// IPv4-only host reach each other through the relay", with the real
// coordinator in a dual-stack lab: a member reaches the embedded relay over
// IPv6 (the coordinator's IPv6 STUN address, which TURN shares), gets an
// IPv4 relay address (RFC 6156), and an IPv4 host's echo of what it relays
// comes back to it over IPv6.
func TestRelayIPv6Client(t *testing.T) {
	lab, coord := newLabWith(t, func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{IPv6: true})
	})
	m := newRelayMember(t, lab, coord, "v6member", "203.0.113.40", authKey(t, coord, true))
	peer, err := lab.AddPublicHost("v4peer", "203.0.113.41")
	if err != nil {
		t.Fatal(err)
	}
	hits := udpEcho(t, peer, "0.0.0.0:40000")

	_, port, err := net.SplitHostPort(m.server)
	if err != nil {
		t.Fatal(err)
	}
	server := net.JoinHostPort(meshlab.CoordinatorIPv6, port)
	var pc net.PacketConn
	if err := m.host.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp6", "[::]:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: pc,
		Username: m.relay.Username, Password: m.relay.Password, RequestedAddressFamily: turn.RequestedAddressFamilyIPv4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := allocate(t, c)
	if err != nil {
		t.Fatalf("allocation over IPv6 at %s: %v", server, err)
	}
	ra := relayed.LocalAddr().(*net.UDPAddr)
	if ra.IP.String() != meshlab.CoordinatorIP {
		t.Fatalf("relayed address %v, want one on %s", ra, meshlab.CoordinatorIP)
	}
	to := &net.UDPAddr{IP: peer.IP.AsSlice(), Port: 40000}
	buf := make([]byte, 1500)
	got := false
	for try := 0; try < 10 && !got; try++ {
		if _, err := relayed.WriteTo([]byte("over ipv6"), to); err != nil {
			t.Fatal(err)
		}
		relayed.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, from, err := relayed.ReadFrom(buf)
		got = err == nil && string(buf[:n]) == "over ipv6" && from.String() == to.String()
	}
	if !got {
		t.Fatalf("no echo through the relay (the peer got %d datagrams)", hits.Load())
	}
	t.Logf("IPv6 client at %v relayed via %v to the IPv4 peer %v and back", pc.LocalAddr(), ra, to)
}

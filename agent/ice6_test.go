package agent

import (
	"context"
	"net"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5"
)

// TestWithoutLinkLocal: an interface's IPv6 link-local addresses are no
// host candidates (they need a zone the peer cannot use); its global IPv6
// and IPv4 addresses are, and an interface without link-local ones is
// passed through as it is.
func TestWithoutLinkLocal(t *testing.T) {
	ifc := transport.NewInterface(net.Interface{Name: "eth0", Flags: net.FlagUp})
	for _, s := range []string{"10.1.0.11/24", "fe80::1/64", "2001:db8:1::11/64"} {
		ip, n, _ := net.ParseCIDR(s)
		n.IP = ip
		ifc.AddAddress(n)
	}
	got, err := withoutLinkLocal(ifc).Addrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "10.1.0.11/24" || got[1].String() != "2001:db8:1::11/64" {
		t.Errorf("addresses %v, want the IPv4 and the global IPv6 one", got)
	}
	if all, _ := ifc.Addrs(); len(all) != 3 {
		t.Errorf("the shared interface lost addresses: %v", all)
	}
	plain := transport.NewInterface(net.Interface{Name: "eth1"})
	_, n, _ := net.ParseCIDR("192.0.2.1/24")
	plain.AddAddress(n)
	if withoutLinkLocal(plain) != plain {
		t.Error("an interface without link-local addresses was copied")
	}
}

// TestRelayFamily: the family a relay is reached over follows its
// address, and ICE's TURN transports follow the family.
func TestRelayFamily(t *testing.T) {
	for server, want := range map[string]bool{"203.0.113.10:3478": false, "[2001:db8::10]:3478": true, "[::ffff:203.0.113.10]:3478": false} {
		got, err := relayIPv6(context.Background(), server)
		if err != nil || got != want {
			t.Errorf("%s: IPv6 %v (%v), want %v", server, got, err, want)
		}
		nt := relayTarget{IPv6: got}.turnTransports()
		if nt[0].IsIPv6() != want || nt[1].IsIPv6() != want || !nt[1].IsTCP() {
			t.Errorf("%s: transports %v", server, nt)
		}
	}
	if _, err := relayIPv6(context.Background(), "no-port"); err == nil {
		t.Error("a server without a port was accepted")
	}
}

func TestIPv6Candidate(t *testing.T) {
	c6, _ := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: "2001:db8::1", Port: 1, Component: 1})
	c4, _ := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: "192.0.2.1", Port: 1, Component: 1})
	if !ipv6Candidate(c6) || ipv6Candidate(c4) {
		t.Error("ipv6Candidate mixes up the families")
	}
}

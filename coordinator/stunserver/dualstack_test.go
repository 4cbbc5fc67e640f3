package stunserver

import (
	"net"
	"testing"

	"github.com/pion/stun/v4"
)

// TestSTUNDualStack checks that a STUN socket on ":0" answers both
// families, each with an XOR-MAPPED-ADDRESS of the client's own family:
// an IPv4 client must not get its v4-mapped IPv6 form (16 bytes, family
// IPv6), which an IPv4 socket could not use.
func TestSTUNDualStack(t *testing.T) {
	srv := serveSTUN(t, ":0", "")
	port := srv.Port()
	for _, c := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		ip := net.ParseIP(c.ip)
		conn, err := net.ListenUDP(c.network, &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp, _ := exchange(t, conn, &net.UDPAddr{IP: ip, Port: port}, -1)
		if resp == nil {
			t.Fatalf("%s: no answer", c.network)
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(resp); err != nil {
			t.Fatal(err)
		}
		local := conn.LocalAddr().(*net.UDPAddr)
		if !xor.IP.Equal(local.IP) || xor.Port != local.Port {
			t.Errorf("%s: mapped %v, want %v", c.network, xor, local)
		}
		if got4 := len(xor.IP) == net.IPv4len; got4 != (c.network == "udp4") {
			t.Errorf("%s: mapped address of %d bytes (%v): wrong family", c.network, len(xor.IP), xor.IP)
		}
	}
}

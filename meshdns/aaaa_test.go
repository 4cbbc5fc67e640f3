package meshdns

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

var server6 = netip.MustParseAddr("fd12:3456:789a::6440:2")

// AAAA: a node with an IPv6 overlay address has one, a node without has
// none (the name still exists), and its ip6.arpa name points back.
func TestResolverAAAA(t *testing.T) {
	r, up := newResolver(t)
	r.SetNames("mesh.internal", []Record{
		{Name: "server", IP: serverIP, IP6: server6},
		{Name: "laptop", IP: laptopIP},
		{Name: "printer", IP: netip.MustParseAddr("100.64.0.4"), IP6: netip.MustParseAddr("2001:db8::1")}, // not a ULA: ignored
	})
	for _, network := range []string{"udp", "tcp"} {
		a := ask(t, network, r, "server.mesh.internal.", dnsmessage.TypeAAAA)
		if a.RCode != dnsmessage.RCodeSuccess || !slices.Equal(a.AAAA, []netip.Addr{server6}) || len(a.A) != 0 {
			t.Errorf("%s AAAA server: %v A %v AAAA %v", network, a.RCode, a.A, a.AAAA)
		}
		if a := ask(t, network, r, "server.mesh.internal.", dnsmessage.TypeA); !slices.Equal(a.A, []netip.Addr{serverIP}) || len(a.AAAA) != 0 {
			t.Errorf("%s A server: A %v AAAA %v", network, a.A, a.AAAA)
		}
		for _, name := range []string{"laptop.mesh.internal.", "printer.mesh.internal."} {
			if a := ask(t, network, r, name, dnsmessage.TypeAAAA); a.RCode != dnsmessage.RCodeSuccess || len(a.AAAA) != 0 || a.NS != 1 {
				t.Errorf("%s AAAA %s: %v AAAA %v NS %d, want NODATA with the SOA", network, name, a.RCode, a.AAAA, a.NS)
			}
		}
	}
	ptr := "2.0.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa."
	if a := ask(t, "udp", r, ptr, dnsmessage.TypePTR); a.RCode != dnsmessage.RCodeSuccess || !slices.Equal(a.PTR, []string{"server.mesh.internal."}) {
		t.Errorf("PTR of %v: %v %v", server6, a.RCode, a.PTR)
	}
	unused := "9.0.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa."
	if a := ask(t, "udp", r, unused, dnsmessage.TypePTR); a.RCode != dnsmessage.RCodeNameError || a.NS != 1 {
		t.Errorf("PTR of an unused address in the mesh's /48: %v NS %d", a.RCode, a.NS)
	}
	before := up.Queries.Load()
	outside6 := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
	if a := ask(t, "udp", r, outside6, dnsmessage.TypePTR); a.NS != 0 || up.Queries.Load() != before+1 {
		t.Errorf("PTR outside the mesh's /48 not forwarded: %v NS %d", a.RCode, a.NS)
	}
}

func TestReverseIPv6(t *testing.T) {
	if ip, ok := reverseIPv6("2.0.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa"); !ok || ip != server6 {
		t.Fatalf("reverseIPv6 = %v %v", ip, ok)
	}
	for _, bad := range []string{"ip6.arpa", "2.ip6.arpa", "g.0.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa",
		"20.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.x"} {
		if _, ok := reverseIPv6(bad); ok {
			t.Errorf("reverseIPv6(%q) ok", bad)
		}
	}
}

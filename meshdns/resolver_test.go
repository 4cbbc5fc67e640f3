package meshdns

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/dnstest"
)

var (
	serverIP = netip.MustParseAddr("100.64.0.2")
	laptopIP = netip.MustParseAddr("100.64.0.3")
	outside  = netip.MustParseAddr("192.0.2.7")
)

// newResolver runs a resolver on loopback whose upstream is a test server
// that knows example.com (and, as an attacker would like, evil.com).
func newResolver(t *testing.T) (*Resolver, *dnstest.Server) {
	t.Helper()
	up, err := dnstest.Listen("127.0.0.1:0", map[string]netip.Addr{"example.com": outside, "evil.com": outside})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	r, err := Listen(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Upstreams: []netip.AddrPort{up.Addr()},
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.SetNames("mesh.internal", []Record{
		{Name: "server", IP: serverIP},
		{Name: "laptop", IP: laptopIP},
		// A coordinator would never send these; the resolver ignores them.
		{Name: "evil.com", IP: laptopIP},
		{Name: "com", IP: laptopIP},
		{Name: "bad_name", IP: laptopIP},
		{Name: "server", IP: laptopIP}, // duplicate: the first wins
	})
	return r, up
}

func ask(t *testing.T, network string, r *Resolver, name string, typ dnsmessage.Type) dnstest.Answer {
	t.Helper()
	addr := r.UDPAddr()
	if network == "tcp" {
		addr = r.TCPAddr()
	}
	a, err := dnstest.Query(network, addr, name, typ)
	if err != nil {
		t.Fatalf("%s %s %v: %v", network, name, typ, err)
	}
	return a
}

func TestResolverMeshNames(t *testing.T) {
	r, up := newResolver(t)
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			typ   dnsmessage.Type
			rcode dnsmessage.RCode
			a     []netip.Addr
		}{
			{"server.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{serverIP}},
			{"SERVER.Mesh.Internal.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{serverIP}},
			{"laptop.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{laptopIP}},
			{"server.mesh.internal.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
			{"server.mesh.internal.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
			{"nobody.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
			{"www.server.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
			{"evil.com.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
			{"bad_name.mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
			{"mesh.internal.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
			// Outside the mesh domain: the upstream's answer, whatever
			// records peers sent.
			{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{outside}},
			{"evil.com.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{outside}},
			{"com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
			{"server.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		} {
			a := ask(t, network, r, c.name, c.typ)
			if a.RCode != c.rcode || !slices.Equal(a.A, c.a) {
				t.Errorf("%s %s %v: rcode %v, A %v; want %v, %v", network, c.name, c.typ, a.RCode, a.A, c.rcode, c.a)
			}
			if c.rcode == dnsmessage.RCodeNameError && c.name != "com." && c.name != "server." && a.NS != 1 {
				t.Errorf("%s %s: NXDOMAIN without the zone's SOA (%d authority records)", network, c.name, a.NS)
			}
		}
	}
	if up.Queries.Load() != 8 { // example.com, evil.com, com, server, twice each
		t.Errorf("upstream saw %d queries, want 8: mesh names must not leak upstream", up.Queries.Load())
	}
}

func TestResolverPTR(t *testing.T) {
	r, _ := newResolver(t)
	a := ask(t, "udp", r, "2.0.64.100.in-addr.arpa.", dnsmessage.TypePTR)
	if a.RCode != dnsmessage.RCodeSuccess || !slices.Equal(a.PTR, []string{"server.mesh.internal."}) {
		t.Errorf("PTR of %v: %v %v", serverIP, a.RCode, a.PTR)
	}
	if a := ask(t, "udp", r, "9.0.64.100.in-addr.arpa.", dnsmessage.TypePTR); a.RCode != dnsmessage.RCodeNameError {
		t.Errorf("PTR of an unused overlay address: %v", a.RCode)
	}
	// Outside the overlay: forwarded (the test upstream knows nothing).
	if a := ask(t, "udp", r, "7.2.0.192.in-addr.arpa.", dnsmessage.TypePTR); a.RCode != dnsmessage.RCodeNameError || a.NS != 0 {
		t.Errorf("PTR outside the overlay: %v, %d authority records (want the upstream's bare NXDOMAIN)", a.RCode, a.NS)
	}
}

// A forwarded answer is passed on byte for byte.
func TestResolverForwardsVerbatim(t *testing.T) {
	r, up := newResolver(t)
	n, _ := dnsmessage.NewName("example.com.")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 777, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	msg, _ := b.Finish()
	direct, err := dnstest.Exchange("udp", up.Addr(), msg)
	if err != nil {
		t.Fatal(err)
	}
	via, err := dnstest.Exchange("udp", r.UDPAddr(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(direct, via) {
		t.Errorf("forwarded answer differs:\n direct %x\n via    %x", direct, via)
	}
}

func TestResolverBadInput(t *testing.T) {
	r, _ := newResolver(t)
	// Garbage and responses get no answer; the resolver keeps working.
	for _, msg := range [][]byte{{}, {1, 2, 3}, bytes.Repeat([]byte{0xff}, 600)} {
		c, err := net.Dial("udp", r.UDPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(make([]byte, 512)); err == nil {
			t.Errorf("answer (%d bytes) to garbage %x", n, msg[:min(len(msg), 8)])
		}
		c.Close()
	}
	// Two questions: FORMERR.
	n, _ := dnsmessage.NewName("server.mesh.internal.")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 9})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	msg, _ := b.Finish()
	raw, err := dnstest.Exchange("udp", r.UDPAddr(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := dnstest.Parse(raw); a.RCode != dnsmessage.RCodeFormatError {
		t.Errorf("two questions: %v, want FORMERR", a.RCode)
	}
	if a := ask(t, "udp", r, "server.mesh.internal.", dnsmessage.TypeA); !slices.Equal(a.A, []netip.Addr{serverIP}) {
		t.Errorf("after bad input: %v", a.A)
	}
}

// Only this host may ask: a LAN neighbour routing to the address, or a
// peer through the tunnel, is not served.
func TestResolverSources(t *testing.T) {
	r, _ := newResolver(t)
	self := netip.MustParseAddr("100.64.0.5")
	r.SetSelf(self)
	for _, ok := range []string{"127.0.0.1", "127.0.0.53", "100.64.0.5"} {
		if !r.allowed(netip.MustParseAddr(ok)) {
			t.Errorf("%s refused", ok)
		}
	}
	for _, bad := range []string{"192.168.1.20", "100.64.0.2", "10.0.0.1", "203.0.113.9"} {
		if r.allowed(netip.MustParseAddr(bad)) {
			t.Errorf("%s allowed", bad)
		}
	}
}

// The resolver never forwards to itself.
func TestFilterUpstreams(t *testing.T) {
	self := netip.MustParseAddrPort("192.0.2.1:53")
	got := filterUpstreams([]netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:53"),
		netip.MustParseAddrPort("100.100.100.100:53"),
		netip.MustParseAddrPort("0.0.0.0:53"),
		netip.MustParseAddrPort("192.0.2.53:53"),
		netip.MustParseAddrPort("[::ffff:127.0.0.53]:53"),
		netip.MustParseAddrPort("198.51.100.1:53"),
		netip.MustParseAddrPort("198.51.100.2:53"),
	}, self)
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("198.51.100.1:53")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := filterUpstreams([]netip.AddrPort{netip.AddrPortFrom(control.ResolverAddr, 5353)}, netip.MustParseAddrPort("127.0.0.1:53")); len(got) != 0 {
		t.Errorf("kept the mesh resolver address: %v", got)
	}
}

func TestResolverNoUpstream(t *testing.T) {
	r, err := Listen(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if a := ask(t, "udp", r, "example.com.", dnsmessage.TypeA); a.RCode != dnsmessage.RCodeServerFailure {
		t.Errorf("no upstream: %v, want SERVFAIL", a.RCode)
	}
}

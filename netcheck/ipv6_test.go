package netcheck

import (
	"net"
	"strconv"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

// TestRunIPv6 runs netcheck against a real coordinator whose STUN socket
// takes both families (":0") and that lists ::1 as its IPv6 STUN server:
// the report has the IPv6 endpoint (a local address: not translated) and
// the IPv4 results as before. A coordinator reached over IPv6 names its
// IPv6 address as a plain STUN server: netcheck moves it to the IPv6 test.
func TestRunIPv6(t *testing.T) {
	srv := runCoordinator(t, coordinator.Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(), STUNListen: ":0", PublicIPv6: "::1",
	})

	info, err := FetchInfo(t.Context(), "http://"+srv.HTTPAddr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.STUN6) != 1 {
		t.Fatalf("netcheck-info %+v: want one IPv6 STUN server", info)
	}
	rep, err := Run(t.Context(), Config{STUN: info.STUN, STUN6: info.STUN6})
	if err != nil {
		t.Fatal(err)
	}
	v6 := rep.IPv6
	if !v6.Tested || !v6.UDP || v6.PublicIP != "::1" || v6.Translated {
		t.Fatalf("IPv6 report %+v, want the untranslated endpoint on ::1", v6)
	}
	if !rep.UDP || rep.IPv4Unavailable != "" || rep.PublicIP != "127.0.0.1" {
		t.Errorf("IPv4 part: udp %v, public %q, unavailable %q", rep.UDP, rep.PublicIP, rep.IPv4Unavailable)
	}
	found := false
	for _, s := range rep.Servers {
		found = found || s.Kind == KindSTUN6 && s.LatencyMs != nil
	}
	if !found {
		t.Errorf("servers %+v: no answering %s", rep.Servers, KindSTUN6)
	}

	// Only an IPv6 literal given as a plain server: IPv6 tested, IPv4 not.
	port := srv.STUNAddr().(*net.UDPAddr).Port
	only := control.STUNServer{Addr: net.JoinHostPort("::1", strconv.Itoa(port))}
	rep, err = Run(t.Context(), Config{STUN: []control.STUNServer{only}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.IPv6.UDP || rep.IPv4Unavailable == "" || rep.UDP {
		t.Errorf("IPv6 literal alone: ipv6 %+v, ipv4 unavailable %q, udp %v", rep.IPv6, rep.IPv4Unavailable, rep.UDP)
	}
}

package agent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/internal/dnstest"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/meshdns"
)

func TestDNSMetrics(t *testing.T) {
	res, err := meshdns.Listen(meshdns.Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	res.SetNames("mesh.internal", []meshdns.Record{{Name: "server", IP: netip.MustParseAddr("100.64.0.2")}})
	reg := metrics.NewRegistry()
	registerDNSMetrics(reg, res)
	for _, name := range []string{"server.mesh.internal.", "nobody.mesh.internal.", "example.com."} {
		if _, err := dnstest.Query("udp", res.UDPAddr(), name, dnsmessage.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	var body strings.Builder
	if _, err := reg.WriteTo(&body); err != nil {
		t.Fatal(err)
	}
	vals, err := metrics.Parse(strings.NewReader(body.String()))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{
		`meshvpn_agent_dns_queries_total{result="mesh"}`:      2,
		`meshvpn_agent_dns_queries_total{result="forwarded"}`: 1,
		`meshvpn_agent_dns_queries_total{result="refused"}`:   0,
	} {
		if got, ok := vals[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", k, got, ok, want, body.String())
		}
	}
}

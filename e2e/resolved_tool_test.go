package e2e

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/hostdns"
	"github.com/meshvpn/meshvpn/internal/dnstest"
	"github.com/meshvpn/meshvpn/meshdns"
	"github.com/meshvpn/meshvpn/tun"
)

// resolvedCheck is the tool mode "resolved-check", run in a namespace where
// a real systemd-resolved answers on 127.0.0.53 and owns resolv.conf: the
// agent's TUN, resolver and host integration, as `meshvpn up` sets them,
// then queries through resolved's stub. It prints "ok" or fails.
func resolvedCheck() error {
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	self := netip.MustParseAddr("100.64.0.1")
	server := netip.MustParseAddr("100.64.0.2")
	td, err := tun.Create(tun.Config{Name: "meshvpn0", Addr: self, Routes: []netip.Prefix{control.OverlayPrefix}})
	if err != nil {
		return err
	}
	defer td.Close()
	if err := td.AddAddr(control.ResolverAddr); err != nil {
		return err
	}
	conf, err := os.ReadFile(hostdns.DefaultResolvConf)
	if err != nil {
		return err
	}
	res, err := meshdns.Listen(meshdns.Config{Listen: netip.AddrPortFrom(control.ResolverAddr, 53), Upstreams: hostdns.Upstreams(conf), Logger: log})
	if err != nil {
		return err
	}
	defer res.Close()
	res.SetSelf(self)
	res.SetNames("mesh.internal", []meshdns.Record{{Name: "laptop", IP: self}, {Name: "server", IP: server}})
	m := hostdns.NewManager(hostdns.Config{StateDir: os.TempDir(), Resolver: control.ResolverAddr, IfIndex: td.Index(), Log: log})
	if err := m.Apply("mesh.internal"); err != nil {
		return err
	}
	if m.Mode() != hostdns.ModeResolved {
		return fmt.Errorf("mode %q, want resolved", m.Mode())
	}
	if after, _ := os.ReadFile(hostdns.DefaultResolvConf); string(after) != string(conf) {
		return errors.New("resolv.conf was rewritten in resolved mode")
	}
	stub := netip.MustParseAddrPort("127.0.0.53:53")
	var a dnstest.Answer
	for range 50 { // resolved applies link settings at once; allow a moment
		if a, err = dnstest.Query("udp", stub, "server.mesh.internal.", dnsmessage.TypeA); err == nil && slices.Equal(a.A, []netip.Addr{server}) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(a.A, []netip.Addr{server}) {
		return fmt.Errorf("server.mesh.internal through resolved: %v %v (%v)", a.RCode, a.A, err)
	}
	fmt.Println("server.mesh.internal through resolved:", a.A)
	// Plain names: resolved lists the link's search domain for the C library.
	stubConf, _ := os.ReadFile("/run/systemd/resolve/stub-resolv.conf")
	if !strings.Contains(string(stubConf), "search mesh.internal") {
		return fmt.Errorf("resolved's stub-resolv.conf has no search mesh.internal:\n%s", stubConf)
	}
	// Other names are not routed to our link (no loop through our
	// forwarder, which goes back to 127.0.0.53).
	before := res.Forwarded()
	dnstest.Query("udp", stub, "www.example.test.", dnsmessage.TypeA)
	if n := res.Forwarded() - before; n != 0 {
		return fmt.Errorf("resolved sent %d queries for a name outside the mesh to our link", n)
	}
	if err := m.Restore(); err != nil {
		return err
	}
	if a, err := dnstest.Query("udp", stub, "server.mesh.internal.", dnsmessage.TypeA); err == nil && len(a.A) > 0 {
		return fmt.Errorf("after Restore resolved still answers %v", a.A)
	}
	fmt.Println("ok")
	return nil
}

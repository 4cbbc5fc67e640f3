package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshvpn/meshvpn/internal/dnstest"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// overlayIP6 returns the agent's IPv6 overlay address from its status; it
// must be in the ULA range.
func overlayIP6(t testing.TB, a *meshlab.Agent) netip.Addr {
	t.Helper()
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(st.Self.IP6)
	if err != nil || !netip.MustParsePrefix("fd00::/8").Contains(ip) {
		t.Fatalf("%s: status ip6 %q is not a ULA address", a.Name, st.Self.IP6)
	}
	return ip
}

// hostIPv6On turns the IPv6 stack on in h's namespace (the lab turns it off
// unless the lab is dual-stack): the host has IPv6 but no IPv6 internet,
// so the underlay stays IPv4 behind the NATs and only the overlay is IPv6.
func hostIPv6On(t testing.TB, h *natlab.Host) {
	t.Helper()
	if out, err := h.Run(t.Context(), "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0"); err != nil {
		t.Fatalf("turn IPv6 on in %s: %v\n%s", h.Name, err, out)
	}
}

// meshPing runs `meshvpn ping ARGS` in a's namespace until a run succeeds.
func meshPing(ctx context.Context, a *meshlab.Agent, timeout time.Duration, args ...string) (string, error) {
	var out string
	err := natlab.Poll(ctx, timeout, 500*time.Millisecond, func() error {
		var err error
		out, err = a.Host.Run(ctx, a.Coord.Bins.Agent, append(append([]string{"ping"}, args...), "-c", "2", "--socket", a.Socket)...)
		return err
	})
	return out, err
}

// listenIn6 listens on TCP port of every IPv6 address in h's namespace.
func listenIn6(t *testing.T, h *natlab.Host, port int) {
	t.Helper()
	listenOn(t, h, "tcp6", fmt.Sprintf("[::]:%d", port))
}

// dial6From opens a TCP connection over IPv6 from h's namespace.
func dial6From(h *natlab.Host, ip netip.Addr, port int, timeout time.Duration) error {
	return dialNet(h, "tcp6", netip.AddrPortFrom(ip, uint16(port)).String(), timeout)
}

// TestOverlayIPv6: two NATed sites get IPv6 overlay addresses in one ULA
// /48 beside their IPv4 ones; the TUN device carries the address and the
// route; meshvpn ping -6 and ping by IPv6 address work; the mesh resolver
// answers AAAA; real ssh runs over the overlay's IPv6 addresses; and a
// restarted agent comes back with the same IPv6 address.
func TestOverlayIPv6(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	client := addSiteAgent(t, lab, coord, "laptop", sshClientNAT)
	server := addSiteAgent(t, lab, coord, "server", sshServerNAT)
	ctx := t.Context()
	for _, a := range []*meshlab.Agent{client, server} {
		hostIPv6On(t, a.Host)
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{client, server}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	client6, server6 := overlayIP6(t, client), overlayIP6(t, server)
	mesh6 := netip.PrefixFrom(client6, 48).Masked()
	if !mesh6.Contains(server6) {
		t.Fatalf("%v and %v are not in one /48", client6, server6)
	}
	t.Logf("mesh /48 %v: laptop %v, server %v", mesh6, client6, server6)
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer("server"); p == nil || p.IP6 != server6.String() {
		t.Fatalf("laptop's status of the server: %+v, want ip6 %v", p, server6)
	}

	// The TUN device has the address, and the /48 is routed into it.
	addrs, err := client.Host.Run(ctx, "ip", "-6", "addr", "show", "dev", meshlab.TUN)
	if err != nil || !strings.Contains(addrs, client6.String()+"/128") {
		t.Fatalf("ip -6 addr on the TUN: %v\n%s", err, addrs)
	}
	routes, err := client.Host.Run(ctx, "ip", "-6", "route", "show", "dev", meshlab.TUN)
	if err != nil || !strings.Contains(routes, mesh6.String()) {
		t.Fatalf("ip -6 route on the TUN: %v\n%s", err, routes)
	}

	// meshvpn ping -6 by name, and by IPv6 address.
	out, err := meshPing(ctx, client, 30*time.Second, "-6", "server")
	if err != nil || !strings.Contains(out, "reply from server ("+server6.String()+")") {
		t.Fatalf("meshvpn ping -6 server: %v\n%s", err, out)
	}
	t.Logf("meshvpn ping -6 server:\n%s", out)
	if out, err := meshPing(ctx, client, 10*time.Second, server6.String()); err != nil || !strings.Contains(out, "from "+client6.String()) {
		t.Fatalf("meshvpn ping %v: %v\n%s", server6, err, out)
	}
	// The system's ping too: the kernel routes the /48 into the tunnel.
	if out, err := pingUntil(ctx, server, client6.String(), 10*time.Second); err != nil {
		t.Fatalf("ping %v from the server: %v\n%s", client6, err, out)
	}

	// AAAA (and A) from the mesh resolver, asked on the laptop.
	var a, a4 dnstest.Answer
	if err := client.Host.Do(func() (err error) {
		if a, err = dnstest.Query("udp", netip.MustParseAddrPort("100.100.100.100:53"), "server.mesh.internal.", dnsmessage.TypeAAAA); err != nil {
			return err
		}
		a4, err = dnstest.Query("udp", netip.MustParseAddrPort("100.100.100.100:53"), "server.mesh.internal.", dnsmessage.TypeA)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(a.AAAA) != 1 || a.AAAA[0] != server6 || len(a.A) != 0 {
		t.Fatalf("AAAA server.mesh.internal: %v AAAA %v A %v, want %v", a.RCode, a.AAAA, a.A, server6)
	}
	if len(a4.A) != 1 || a4.A[0].String() != overlayIP(t, server) {
		t.Fatalf("A server.mesh.internal: %v", a4.A)
	}

	// ssh over the overlay's IPv6 addresses.
	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		t.Fatal(err)
	}
	sshCheck(t, sshd, client, server, client6.String(), server6.String())

	// A restart (stored credential, no key) keeps the IPv6 address.
	if err := server.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := server.Up(ctx, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if again := overlayIP6(t, server); again != server6 {
		t.Fatalf("after a restart the server has %v, before %v", again, server6)
	}
	if out, err := meshPing(ctx, client, 30*time.Second, "-6", "server"); err != nil {
		t.Fatalf("meshvpn ping -6 after the server's restart: %v\n%s", err, out)
	}
}

// TestPolicyOverIPv6: the access policy holds over the IPv6 overlay as
// over IPv4. The laptop may ssh and ping the server (allowed over both
// families); the server's port 80 and any connection from the server to
// the laptop are denied over IPv4, and must be over IPv6 too.
func TestPolicyOverIPv6(t *testing.T) {
	pl := newPolicyLab(t)
	lab, laptop, server := pl.lab, pl.laptop, pl.server
	ctx := t.Context()
	hostIPv6On(t, laptop.Host)
	hostIPv6On(t, server.Host)
	if err := laptop.Up(ctx, pl.plain, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := server.Up(ctx, pl.serverKey, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{laptop, server}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	laptopIP, serverIP := overlayIP(t, laptop), overlayIP(t, server)
	laptop6, server6 := overlayIP6(t, laptop), overlayIP6(t, server)

	// Allowed: ping and ssh from the laptop, over IPv6.
	if out, err := meshPing(ctx, laptop, 30*time.Second, "-6", "server"); err != nil {
		t.Fatalf("laptop → server ping -6 (allowed): %v\n%s", err, out)
	}
	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sshd.Run(ctx, laptop.Host, server6.String(), "echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("ssh laptop → server over IPv6 (allowed): %v\n%s", err, out)
	}

	// Denied: the server's port 80, to the laptop, over both families.
	checkOneWay(t, laptop, server, laptopIP, serverIP)
	listenIn6(t, server.Host, 80)
	if err := dial6From(server.Host, server6, 80, time.Second); err != nil {
		t.Fatalf("port 80 does not answer on the server's own IPv6 address: %v", err)
	}
	if err := dial6From(laptop.Host, server6, 80, 2*time.Second); err == nil {
		t.Fatal("laptop reached the server's port 80 over IPv6: the policy does not hold for IPv6")
	} else {
		t.Logf("laptop → [%v]:80: %v (as the policy says)", server6, err)
	}
	listenIn6(t, laptop.Host, 8022)
	if err := dial6From(server.Host, laptop6, 8022, 2*time.Second); err == nil {
		t.Fatal("server opened a connection to the laptop over IPv6: the policy does not hold for IPv6")
	}
	if out, err := server.Host.Run(ctx, server.Coord.Bins.Agent, "ping", "-6", "laptop", "-c", "1", "--socket", server.Socket); err == nil || !strings.Contains(out+err.Error(), "blocked by policy") {
		t.Fatalf("meshvpn ping -6 laptop from the server: %v\n%s", err, out)
	}
	checkLaptopBlocked(t, server)
}

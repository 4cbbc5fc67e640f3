package natlab

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// listen6 opens a UDP socket on [::]:port inside h's namespace.
func listen6(t *testing.T, h *Host, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendRecv sends from c to to every 100 ms and reports whether r (the
// socket at to) got a packet from c's host within wait. Sending on keeps
// a packet lost to neighbour discovery from passing for a firewall drop.
func sendRecv(c *net.UDPConn, to netip.AddrPort, r *net.UDPConn, from netip.Addr, wait time.Duration) bool {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			c.WriteToUDPAddrPort([]byte("punch"), to)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	buf := make([]byte, 64)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		r.SetReadDeadline(deadline)
		_, src, err := r.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if src.Addr().Unmap() == from {
			return true
		}
	}
	return false
}

// TestIPv6Firewall checks the dual-stack lab: hosts behind two IPv6 site
// routers (one behind an ISP hop) have global addresses and no NAT; an
// unsolicited packet is dropped by the receiver's router, and once both
// have sent, packets pass both ways (a plain punch). A UDPBlocked site lets
// no UDP out over IPv6 either. An IPv6-only site has no IPv4 route but
// reaches the IPv6 internet.
func TestIPv6Firewall(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.EnableIPv6(); err != nil {
		t.Fatal(err)
	}
	pub := mustPublic(t, lab, "pub", "203.0.113.20")
	a, err := lab.AddSiteSpec("a", SiteSpec{Kind: PortRestricted, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddSiteSpec("b", SiteSpec{Kind: Symmetric, IPv6: true, ISPHop: true, Variant: InputAccept})
	if err != nil {
		t.Fatal(err)
	}
	only, err := lab.AddSiteSpec("only", SiteSpec{Kind: PortRestricted, IPv6Only: true})
	if err != nil {
		t.Fatal(err)
	}
	if !pub.IP6.IsValid() || !a.Host.IP6.IsValid() || !b.Host.IP6.IsValid() || !b.Router.IP6.IsValid() {
		t.Fatalf("missing IPv6 addresses: pub %v, a %v, b %v (router %v)", pub.IP6, a.Host.IP6, b.Host.IP6, b.Router.IP6)
	}
	t.Logf("pub %v, a %v, b %v behind hop %v", pub.IP6, a.Host.IP6, b.Host.IP6, b.ISP.IP6)

	ca, cb := listen6(t, a.Host, 40000), listen6(t, b.Host, 40000)
	toA := netip.AddrPortFrom(a.Host.IP6, 40000)
	toB := netip.AddrPortFrom(b.Host.IP6, 40000)
	// b sends first: a's router has seen nothing from a toward b.
	if sendRecv(cb, toA, ca, b.Host.IP6, 700*time.Millisecond) {
		t.Fatal("an unsolicited IPv6 packet from b reached a: want a's router to drop it")
	}
	// a answers: b's router passes it (b sent to a), and it opens a's.
	if !sendRecv(ca, toB, cb, a.Host.IP6, 2*time.Second) {
		t.Fatal("a's packet did not reach b, which had sent to a")
	}
	if !sendRecv(cb, toA, ca, b.Host.IP6, 2*time.Second) {
		t.Fatal("after both sent, b's packet did not reach a")
	}

	// UDPBlocked drops the LAN's UDP over IPv6 too; a's gets out.
	blk, err := lab.AddSiteSpec("blk", SiteSpec{Kind: UDPBlocked, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	cp := listen6(t, pub, 40001)
	toPub := netip.AddrPortFrom(pub.IP6, 40001)
	if !sendRecv(ca, toPub, cp, a.Host.IP6, 2*time.Second) {
		t.Error("UDP over IPv6 from a did not reach the public host")
	}
	if sendRecv(listen6(t, blk.Host, 40000), toPub, cp, blk.Host.IP6, 700*time.Millisecond) {
		t.Error("UDP over IPv6 left a UDPBlocked site")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := only.Host.Run(ctx, "ip", "-4", "route", "get", pub.IP.String()); err == nil {
		t.Errorf("IPv6-only host has an IPv4 route to %v: %s", pub.IP, out)
	} else if !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("IPv6-only host: ip -4 route get: %v; want 'unreachable'", err)
	}
	for _, h := range []*Host{only.Host, a.Host, b.Host} {
		if _, err := h.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "2", pub.IP6.String()); err != nil {
			t.Errorf("ping the public host over IPv6 from %s: %v", h.Name, err)
		}
	}
}

// TestIPv6Refused checks the combinations the lab does not build.
func TestIPv6Refused(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.AddSiteSpec("early", SiteSpec{Kind: PortRestricted, IPv6: true}); err == nil || !strings.Contains(err.Error(), "EnableIPv6") {
		t.Errorf("IPv6 site in an IPv4 lab: %v; want an error naming EnableIPv6", err)
	}
	lab2, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab2.EnableIPv6(); err != nil {
		t.Fatal(err)
	}
	if _, err := lab2.AddSiteSpec("dbl", SiteSpec{Kind: DoubleNAT, IPv6: true}); err == nil || !strings.Contains(err.Error(), "doublenat") {
		t.Errorf("IPv6 DoubleNAT: %v; want a clear refusal", err)
	}
	mustPublic(t, lab2, "x", "203.0.113.20")
	if err := lab2.EnableIPv6(); err == nil {
		t.Error("EnableIPv6 after hosts: want an error")
	}
}

package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/tun"
)

// IPv6 on the overlay: the coordinator gives the mesh a ULA /48 and every
// node an address in it beside its IPv4 one (control.OverlayAddr6). The
// agent puts its own on the TUN device, routes the /48 into it and lets
// each peer use both of its addresses in WireGuard. With an older
// coordinator (no prefix) the overlay stays IPv4 only.

// overlay6FromJoin reads the IPv6 part of a registration answer; it gives
// zero values when the coordinator sent none or something unusable.
func overlay6FromJoin(resp *control.RegisterResponse) (netip.Addr, netip.Prefix) {
	p, err := netip.ParsePrefix(resp.Prefix6)
	if err != nil || !control.ValidULAPrefix(p) {
		return netip.Addr{}, netip.Prefix{}
	}
	a, err := netip.ParseAddr(resp.IP6)
	if err != nil || !p.Contains(a) {
		return netip.Addr{}, netip.Prefix{}
	}
	return a, p
}

// peerIP6 is n's IPv6 overlay address if it is one of this mesh's, else
// the zero Addr (the peer is then reached over IPv4 only).
func (a *Agent) peerIP6(n control.Node) netip.Addr {
	ip, err := netip.ParseAddr(n.IP6)
	if err != nil || !a.prefix6.IsValid() || !a.prefix6.Contains(ip) {
		return netip.Addr{}
	}
	return ip
}

// overlayIPs are the addresses WireGuard lets the peer n use: its IPv4
// overlay address as a /32 and, when it has one, its IPv6 one as a /128.
func (a *Agent) overlayIPs(n control.Node) []netip.Prefix {
	var out []netip.Prefix
	if ip, err := netip.ParseAddr(n.IP); err == nil && ip.Is4() {
		out = append(out, netip.PrefixFrom(ip, 32))
	}
	if ip := a.peerIP6(n); ip.IsValid() {
		out = append(out, netip.PrefixFrom(ip, 128))
	}
	return out
}

// startOverlay6 puts the node's IPv6 overlay address on the TUN device. A
// host with IPv6 turned off keeps the IPv4 overlay: a warning, no failure.
func (a *Agent) startOverlay6(st *nodeState) {
	ip, err1 := netip.ParseAddr(st.IP6)
	p, err2 := netip.ParsePrefix(st.Prefix6)
	if err1 != nil || err2 != nil {
		return
	}
	if err := a.tun.AddOverlay6(ip, p); err != nil {
		// Turning IPv6 off is the admin's choice: worth a line, not a
		// warning.
		level := slog.LevelWarn
		if errors.Is(err, tun.ErrIPv6Off) {
			level = slog.LevelInfo
		}
		a.log.Log(context.Background(), level, "IPv6 overlay address not set; the overlay is IPv4 only on this host", "ip6", ip, "err", err)
		return
	}
	a.overlay6.Store(true)
	a.log.Info("IPv6 overlay address set", "ip6", ip, "prefix6", p)
}

// selfIP6 is this node's IPv6 overlay address as status shows it: empty
// when it is not on the TUN device.
func (a *Agent) selfIP6(self control.Node) string {
	if !a.overlay6.Load() {
		return ""
	}
	return self.IP6
}

// addrString is a's text, or "" for the zero Addr.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// dnsIP6 is the address the mesh resolver answers AAAA with for n: none
// while this node has no IPv6 overlay address itself, since an
// application here would try an address it cannot reach (glibc's
// `getent hosts` even prefers it, AI_ADDRCONFIG or not).
func (a *Agent) dnsIP6(n control.Node) netip.Addr {
	if !a.overlay6.Load() {
		return netip.Addr{}
	}
	return a.peerIP6(n)
}

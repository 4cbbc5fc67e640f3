package natlab

import (
	"fmt"
	"net/netip"
	"strings"
)

// Dual stack (opt-in: Lab.EnableIPv6, SiteSpec.IPv6 / IPv6Only).
//
// Addresses, all in the documentation prefix 2001:db8::/32:
//   - The internet bridge is 2001:db8::/64. A namespace on it gets
//     2001:db8::/96 plus its IPv4 bridge address in the low 32 bits
//     (203.0.113.20 -> 2001:db8::cb00:7114), so both are easy to tell apart
//     from each other's logs and never clash.
//   - Site N owns 2001:db8:N::/48 (N in hex), routed by every dual-stack
//     namespace on the bridge via the site's bridge-facing box: its router,
//     or its ISP hop.
//   - The LAN is 2001:db8:N::/64: the router is ::1, hosts ::(10+i) in
//     hex, as the IPv4 LAN's 10.N.0.(10+i).
//   - Behind an ISP hop, hop and router share 2001:db8:N:ffff::/64 (hop ::1,
//     router ::2).
//
// A site router does not NAT IPv6: it forwards through a stateful firewall
// (outbound and replies pass, unsolicited inbound is dropped), as home
// routers do (LAB-NOTES.md, "Dual stack (IPv6) in namespaces").

// bridge6 is the internet bridge's IPv6 prefix.
var bridge6 = netip.MustParsePrefix("2001:db8::/64")

// bridgeAddr6 is the IPv6 address of the namespace whose bridge IPv4 is v4.
func bridgeAddr6(v4 netip.Addr) netip.Addr {
	a := bridge6.Addr().As16()
	b := v4.As4()
	copy(a[12:], b[:])
	return netip.AddrFrom16(a)
}

// site6 is site index's /48; lan6 its LAN /64; hop6 the link to its ISP hop.
func site6(index int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/48", index))
}

func lan6(index int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/64", index))
}

func hop6(index int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:ffff::/64", index))
}

// nth is prefix p's address number n (small n).
func nth(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As16()
	a[14], a[15] = byte(n>>8), byte(n)
	return netip.AddrFrom16(a)
}

// EnableIPv6 makes the lab's internet dual-stack: every public host added
// afterwards (AddPublicHost, hosts of KindNone sites) gets an IPv6 address
// beside its IPv4 one (Host.IP6), and sites may ask for IPv6 (SiteSpec).
// Call it before adding hosts; labs that never call it stay IPv4-only.
func (l *Lab) EnableIPv6() error {
	l.bridgeMu.Lock()
	defer l.bridgeMu.Unlock()
	if len(l.bridged) > 0 {
		return fmt.Errorf("natlab: EnableIPv6 after hosts were added (call it first)")
	}
	l.ipv6 = true
	return nil
}

// IPv6 tells whether EnableIPv6 was called.
func (l *Lab) IPv6() bool {
	l.bridgeMu.Lock()
	defer l.bridgeMu.Unlock()
	return l.ipv6
}

// enableIPv6 turns IPv6 on in ns (every lab namespace starts with it off)
// with duplicate address detection off, so addresses are usable at once;
// forward also makes ns an IPv6 router.
func enableIPv6(ns string, forward bool) error {
	keys := []string{
		"net/ipv6/conf/all/disable_ipv6=0", "net/ipv6/conf/default/disable_ipv6=0",
		"net/ipv6/conf/all/accept_dad=0", "net/ipv6/conf/default/accept_dad=0",
		// Addresses and routes are static; router advertisements from a
		// neighbour must not add any.
		"net/ipv6/conf/all/accept_ra=0", "net/ipv6/conf/default/accept_ra=0",
	}
	if forward {
		keys = append(keys, "net/ipv6/conf/all/forwarding=1")
	}
	for _, kv := range keys {
		k, v, _ := strings.Cut(kv, "=")
		if err := setSysctl(ns, k, v); err != nil {
			return err
		}
	}
	return nil
}

// addAddr6 adds a (prefix-length bits) to ifname in ns, without DAD.
func addAddr6(ns, ifname string, a netip.Addr, bits int) []string {
	return []string{"ip", "-n", ns, "-6", "addr", "add", netip.PrefixFrom(a, bits).String(), "dev", ifname, "nodad"}
}

// joinBridge6 gives ns (already on the bridge as ifname with IPv4 v4) its
// IPv6 bridge address and routes to every dual-stack site; with a valid
// behind, every other dual-stack namespace on the bridge routes it via ns.
// Callers hold bridgeMu.
func (l *Lab) joinBridge6(ns, ifname string, v4 netip.Addr, behind netip.Prefix) (netip.Addr, error) {
	if err := enableIPv6(ns, behind.IsValid()); err != nil {
		return netip.Addr{}, err
	}
	a := bridgeAddr6(v4)
	routes, rs, bridged := joinRoutes(ns, l.routes6, l.bridged6, behind, a)
	l.routes6, l.bridged6 = rs, bridged
	return a, runAll(append([][]string{addAddr6(ns, ifname, a, bridge6.Bits())}, routes...)...)
}

// check6 refuses IPv6 site specs the lab cannot build.
func (spec SiteSpec) check6(l *Lab) error {
	if !spec.IPv6 && !spec.IPv6Only {
		return nil
	}
	if !l.IPv6() {
		return fmt.Errorf("an IPv6 site needs a dual-stack lab: call Lab.EnableIPv6 before adding hosts")
	}
	switch spec.Kind {
	case None:
		if spec.IPv6Only {
			return fmt.Errorf("IPv6Only needs a router (a public host of a dual-stack lab has both families)")
		}
	case DoubleNAT:
		// A carrier's IPv6 would be routed past its CGN; not built yet.
		return fmt.Errorf("IPv6 is not built for %v sites", spec.Kind)
	}
	return nil
}

// firewall6 is the router's IPv6 ruleset: no NAT, a stateful firewall.
// UDPBlocked drops the LAN's UDP over IPv6 too. The input chain mirrors the
// IPv4 variant; ICMPv6 passes everywhere (neighbour discovery, and path MTU
// discovery, which IPv6 cannot do without).
func firewall6(kind Kind, v Variant) string {
	var b strings.Builder
	b.WriteString("table ip6 natlab6 {\n")
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n")
	if kind == UDPBlocked {
		b.WriteString("\t\tiifname \"lan\" meta l4proto udp drop\n")
	}
	b.WriteString("\t\tct state established,related accept\n")
	b.WriteString("\t\tmeta l4proto ipv6-icmp accept\n")
	b.WriteString("\t\tiifname \"lan\" accept\n")
	b.WriteString("\t}\n")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	if v != InputAccept {
		b.WriteString("\t\tct state established,related accept\n")
		b.WriteString("\t\tmeta l4proto ipv6-icmp accept\n")
		b.WriteString("\t\tiifname \"wan\" drop\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

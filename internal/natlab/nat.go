package natlab

import (
	"fmt"
	"net/netip"
	"strings"
)

// Kind is a router's NAT behaviour, in RFC 4787 terms:
//
//	kind            mapping                filtering
//	FullCone        endpoint-independent   endpoint-independent
//	RestrictedCone  endpoint-independent   address-dependent
//	PortRestricted  endpoint-independent   address-and-port-dependent
//	Symmetric       endpoint-dependent     address-and-port-dependent
//	UDPBlocked      as PortRestricted for TCP; all outbound UDP dropped
//	DoubleNAT       endpoint-independent   address-and-port-dependent
//	                (a PortRestricted home router behind a PortRestricted
//	                carrier NAT)
//
// None means no router: the site's hosts are public.
type Kind int

const (
	None Kind = iota
	FullCone
	RestrictedCone
	PortRestricted
	Symmetric
	// UDPBlocked is a firewall that lets only TCP out (as in some offices
	// and hotels): peers behind it can only be reached through a TURN
	// relay over TCP or TLS.
	UDPBlocked
	// DoubleNAT is a home router behind a carrier-grade NAT, both
	// port-restricted cone: the site's hosts appear from the carrier's
	// address (Site.PublicIP), and a peer's packet meets two conntrack
	// tables on its way in.
	DoubleNAT
)

var kindNames = []string{
	None:           "public",
	FullCone:       "fullcone",
	RestrictedCone: "restrictedcone",
	PortRestricted: "portrestricted",
	Symmetric:      "symmetric",
	UDPBlocked:     "udpblocked",
	DoubleNAT:      "doublenat",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if name == s {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("natlab: unknown NAT kind %q (want one of %s)", s, strings.Join(kindNames, ", "))
}

// ruleset is the router's nftables configuration, split by chain so that a
// kind only says what is special about it. Everything lives in one table
// (ip natlab) because nftables sets are per table and the restricted cone
// fills a set in the forward chain that its prerouting chain reads.
type ruleset struct {
	sets        []string
	prerouting  []string // nat, dstnat priority: inbound port forwarding
	postrouting []string // nat, srcnat priority: the masquerade
	forward     []string // filter: kind-specific rules, before the firewall
	input       []string // filter: kind-specific rules for the router itself
	// openInput leaves out the input firewall (Variant InputAccept).
	openInput bool
}

// check reports whether k is a kind this package can build.
func (k Kind) check() error {
	switch k {
	case None, FullCone, RestrictedCone, PortRestricted, Symmetric, UDPBlocked, DoubleNAT:
		return nil
	}
	return fmt.Errorf("natlab: NAT kind %v not supported", k)
}

// rules returns the ruleset of one router of kind k whose LAN is lan;
// host is where full- and restricted-cone routers forward inbound UDP. A
// DoubleNAT site has two routers, each built as PortRestricted.
//
// Recipes verified on these machines (see LAB-NOTES.md). The masquerade
// matches only the router's LAN so that the router's own traffic is never
// NATed. Inbound DNAT relies on Linux preserving the source port, which
// holds while no conntrack tuple clashes; it targets the site's first host
// (one host per full- or restricted-cone router, as on real such devices).
//
// With Variant InputDrop (the default) the router also drops unsolicited
// packets addressed to itself (see render), as home routers do. Without
// that (InputAccept), Linux records a stray peer packet that arrives before
// the host has sent to that peer as a flow to the router itself, and that
// stale entry - refreshed by every further packet from that peer - moves
// the host's later mapping toward that peer (port-restricted: both sides
// punch at each other's old port forever) or keeps the DNAT from ever
// matching (restricted cone: a contacted address stays locked out).
// Docker hosts, cloud NAT instances and DIY routers behave like that, so
// the product must work on both variants.
//
// UDPBlocked drops the LAN's UDP in forward; a miniupnpd router adds the
// miniupnpd chains with jumps to them and accepts its STUN check's
// unsolicited inbound in input.
func (k Kind) rules(lan netip.Prefix, host netip.Addr, v Variant) (ruleset, error) {
	if err := k.check(); err != nil {
		return ruleset{}, err
	}
	if err := v.check(); err != nil {
		return ruleset{}, err
	}
	masq := fmt.Sprintf(`ip saddr %s oifname "wan" masquerade`, lan)
	toHost := fmt.Sprintf(`udp dport 1024-65535 dnat to %s`, host)
	r := ruleset{openInput: v == InputAccept}
	switch k {
	case FullCone:
		r.postrouting = []string{masq}
		r.prerouting = []string{`iifname "wan" ` + toHost}
	case RestrictedCone:
		// Remember every address the LAN sends to; only those may come in,
		// from any of their ports.
		r.sets = []string{`set contacted { type ipv4_addr; flags dynamic,timeout; timeout 5m; }`}
		r.forward = []string{fmt.Sprintf(`iifname "lan" oifname "wan" ip saddr %s update @contacted { ip daddr }`, lan)}
		r.postrouting = []string{masq}
		r.prerouting = []string{`iifname "wan" ip saddr @contacted ` + toHost}
	case PortRestricted, DoubleNAT:
		// Plain conntrack: same external port for every destination, replies
		// only from the exact address and port contacted.
		r.postrouting = []string{masq}
	case Symmetric:
		// A fresh random external port for each new destination.
		r.postrouting = []string{masq + " random,fully-random"}
	case UDPBlocked:
		r.postrouting = []string{masq}
		r.forward = []string{`iifname "lan" oifname "wan" meta l4proto udp drop`}
	}
	return r, nil
}

// render writes the ruleset as an nft script. The forward chain ends in a
// stateful firewall: from the WAN only replies and port-forwarded (DNATed)
// packets reach the LAN, as on a home router.
func (r ruleset) render() string {
	var b strings.Builder
	line := func(indent int, s string) {
		b.WriteString(strings.Repeat("\t", indent) + s + "\n")
	}
	line(0, "table ip natlab {")
	for _, s := range r.sets {
		line(1, s)
	}
	line(1, "chain prerouting {")
	line(2, "type nat hook prerouting priority dstnat; policy accept;")
	for _, s := range r.prerouting {
		line(2, s)
	}
	line(1, "}")
	line(1, "chain postrouting {")
	line(2, "type nat hook postrouting priority srcnat; policy accept;")
	for _, s := range r.postrouting {
		line(2, s)
	}
	line(1, "}")
	line(1, "chain forward {")
	line(2, "type filter hook forward priority filter; policy accept;")
	for _, s := range r.forward {
		line(2, s)
	}
	line(2, "ct state established,related accept")
	line(2, `iifname "wan" ct status dnat accept`)
	line(2, `iifname "wan" drop`)
	line(1, "}")
	// Dropping here, before conntrack confirms the entry, leaves no trace
	// of an unsolicited packet in the conntrack table. The open variant
	// keeps the chain (miniupnpd inserts into it) but drops nothing.
	line(1, "chain input {")
	line(2, "type filter hook input priority filter; policy accept;")
	for _, s := range r.input {
		line(2, s)
	}
	if !r.openInput {
		line(2, "ct state established,related accept")
		line(2, `iifname "wan" drop`)
	}
	line(1, "}")
	line(0, "}")
	return b.String()
}

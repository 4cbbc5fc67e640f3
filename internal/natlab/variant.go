package natlab

import (
	"fmt"
	"time"
)

// Variant is how a site's router treats unsolicited packets addressed to
// itself. Every NAT kind comes in both variants; tests that claim a path
// works on "a NAT of kind K" should run on both (see Variants).
type Variant int

const (
	// InputDrop is a router whose input chain drops what comes in on the
	// WAN unsolicited, as home routers do: a stray packet leaves no
	// conntrack entry behind. The default.
	InputDrop Variant = iota
	// InputAccept is a router with the default ACCEPT input policy, as
	// Docker and libvirt hosts, cloud NAT instances and many DIY and ISP
	// routers: an unsolicited packet to the router's public port gets a
	// confirmed conntrack entry, which moves the host's later mapping
	// toward that sender (LAB-NOTES.md, "Routers without an input
	// firewall").
	InputAccept
)

// Variants lists every router variant, the default first.
var Variants = []Variant{InputDrop, InputAccept}

var variantNames = []string{
	InputDrop:   "inputdrop",
	InputAccept: "inputaccept",
}

func (v Variant) String() string {
	if v >= 0 && int(v) < len(variantNames) {
		return variantNames[v]
	}
	return fmt.Sprintf("Variant(%d)", int(v))
}

func (v Variant) check() error {
	if v < 0 || int(v) >= len(variantNames) {
		return fmt.Errorf("natlab: router variant %v not supported", v)
	}
	return nil
}

// SiteSpec says what site AddSiteSpec builds. The zero Variant is today's
// firewalled router, so SiteSpec{Kind: k} is what AddSite(name, k) builds.
type SiteSpec struct {
	Kind    Kind
	Variant Variant
	// ISPHop puts a plain routing hop (an ISP router: forwarding, no NAT,
	// namespace NAME-isp) between the site's outermost router and the
	// internet, as on the internet, where a packet crosses several routers
	// between two NATs: a packet with a low TTL can then open the site's
	// NAT and die before it reaches a peer's router (see hop.go).
	ISPHop bool
	// IPv6 makes the site dual-stack (needs Lab.EnableIPv6): the router
	// NATs IPv4 as its Kind says and routes IPv6 through a stateful
	// firewall, and each host gets a global IPv6 address (Host.IP6).
	IPv6 bool
	// IPv6Only is IPv6 without IPv4 for the site's hosts: they keep their
	// LAN address but have no IPv4 default route.
	IPv6Only bool
	// WANDelay, when positive, delays every packet between the site's
	// outermost box (its router, carrier NAT or ISP hop) and the internet
	// bridge by this much each way, through a delay box (namespace
	// NAME-dly, delay.go): two such sites are 2×WANDelay apart one way,
	// as NATs on the internet are milliseconds apart. Off by default; at
	// most 1 s.
	WANDelay time.Duration
}

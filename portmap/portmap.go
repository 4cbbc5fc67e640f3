// Package portmap asks the local gateway to forward a UDP port to this host,
// with whichever of PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP IGD v1/v2 the
// gateway speaks. A forwarded port makes a host reachable from any peer, even
// when its NAT is otherwise symmetric.
//
// The three protocols are probed in parallel with a short budget; the first
// that works in order of preference (PCP, NAT-PMP, UPnP) is used. Leases are
// asked for two hours and renewed at half-life for the same external port.
// A gateway that answers garbage, names a private external address (a second
// NAT in front of it) or stops answering gives an error, never a mapping.
package portmap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
	"unicode/utf8"
)

// Protocol names a port-mapping protocol.
type Protocol string

const (
	PCP    Protocol = "pcp"
	NATPMP Protocol = "nat-pmp"
	UPnP   Protocol = "upnp"
)

// Defaults.
const (
	DefaultLease        = 2 * time.Hour
	DefaultProbeTimeout = 250 * time.Millisecond
	// mapTimeout bounds one mapping request once a protocol is known to work.
	mapTimeout = 2 * time.Second
)

// Mapping is a UDP port forwarded by the gateway.
type Mapping struct {
	Protocol Protocol
	// External is the gateway's public address and the forwarded port.
	External netip.AddrPort
	// InternalPort is the local port the gateway forwards to.
	InternalPort uint16
	// Lease is what the gateway granted; 0 means a permanent mapping (UPnP
	// routers that only support those).
	Lease time.Duration
	// Obtained is when the gateway granted or last renewed it.
	Obtained time.Time
}

// Expires is when the lease runs out; zero for a permanent mapping.
func (m Mapping) Expires() time.Time {
	if m.Lease == 0 {
		return time.Time{}
	}
	return m.Obtained.Add(m.Lease)
}

// RenewAt is when the mapping should be renewed: at half-life, and for a
// permanent mapping after half the lease we asked for, to notice one that
// the router lost.
func (m Mapping) RenewAt(asked time.Duration) time.Time {
	l := m.Lease
	if l == 0 {
		l = asked
	}
	return m.Obtained.Add(l / 2)
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s %s -> :%d (lease %v)", m.Protocol, m.External, m.InternalPort, m.Lease)
}

// Config says where the gateway is and how long to wait for it. The zero
// value discovers the gateway from the routing table.
type Config struct {
	// Gateway is the router to ask; invalid means the default route's gateway.
	Gateway netip.Addr
	// UPnPURL, when set, is the IGD's root description (e.g.
	// http://192.168.1.1:5000/rootDesc.xml) and SSDP discovery is skipped.
	// Like a discovered one, it must name the gateway's address.
	UPnPURL string
	// ProbeTimeout bounds the parallel probe; default 250 ms.
	ProbeTimeout time.Duration
	// Lease asked for; default 2 h.
	Lease time.Duration
	// Disable leaves protocols out (e.g. a router known to misbehave).
	Disable []Protocol
	Logger  *slog.Logger

	// pmpPort and ssdpPort let unit tests run fake gateways on loopback.
	pmpPort  uint16
	ssdpAddr string
}

func (c Config) withDefaults() Config {
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.pmpPort == 0 {
		c.pmpPort = pmpServerPort
	}
	if c.ssdpAddr == "" {
		c.ssdpAddr = ssdpMulticast
	}
	return c
}

func (c Config) enabled(p Protocol) bool {
	for _, d := range c.Disable {
		if d == p {
			return false
		}
	}
	return true
}

// ErrNoGateway means no protocol answered: the gateway offers no port
// mapping (or is not there).
var ErrNoGateway = errors.New("no port-mapping gateway answered")

// checkExternal refuses an external address no peer could reach: a private,
// shared (carrier-grade NAT), loopback, link-local or unspecified address
// means another NAT sits in front of the gateway, and a forward on this one
// opens nothing to the internet. Documentation ranges (TEST-NET) are allowed:
// the NAT lab uses them as public addresses.
func checkExternal(ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid() || !ip.Is4():
		return fmt.Errorf("external address %v is not IPv4", ip)
	case ip.IsUnspecified():
		return errors.New("gateway does not know its external address (0.0.0.0)")
	case ip.IsPrivate(), cgnat.Contains(ip):
		return fmt.Errorf("external address %v is private: another NAT is in front of the gateway (double NAT)", ip)
	case ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("external address %v is not a unicast public address", ip)
	}
	return nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// maxErrorText bounds the text of an error that quotes what a gateway sent
// (a URL, an address string): such errors end up in logs and in status.
const maxErrorText = 300

// boundedError is an error whose text is cut to maxErrorText bytes; errors.Is
// and errors.As still see the whole chain.
type boundedError struct{ err error }

func (e boundedError) Error() string {
	s := e.err.Error()
	if len(s) > maxErrorText {
		n := maxErrorText
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "…"
	}
	return s
}

func (e boundedError) Unwrap() error { return e.err }

// bounded wraps err so that its text stays short; nil stays nil.
func bounded(err error) error {
	if err == nil {
		return nil
	}
	return boundedError{err}
}

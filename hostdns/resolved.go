package hostdns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Bus calls methods of systemd-resolved's org.freedesktop.resolve1.Manager
// interface. dbusBus is the real one; tests use a fake.
type Bus interface {
	Call(method string, args ...any) error
	Close() error
}

// linkDNS and linkDomain are the D-Bus structs of SetLinkDNS (a(iay)) and
// SetLinkDomains (a(sb)).
type linkDNS struct {
	Family  int32
	Address []byte
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

// resolvedManages tells whether systemd-resolved manages resolv.conf: the
// file links into /run/systemd/resolve/, or names resolved's stub listener.
func resolvedManages(resolvConf string) bool {
	if target, err := filepath.EvalSymlinks(resolvConf); err == nil && strings.HasPrefix(target, "/run/systemd/resolve/") {
		return true
	}
	content, err := readResolvConf(resolvConf)
	if err != nil {
		return false
	}
	for _, u := range Upstreams(content) {
		if a := u.Addr(); a == netip.MustParseAddr("127.0.0.53") || a == netip.MustParseAddr("127.0.0.54") {
			return true
		}
	}
	return false
}

// setLink gives the TUN link resolver as its DNS server and domain as its
// search and routing domain. The link is never the default route: only the
// mesh domain is sent to it, and our resolver, which forwards the rest to
// resolved's stub, is never asked for other names by resolved (no loop).
func setLink(bus Bus, ifindex int, resolver netip.Addr, domain string) error {
	idx := int32(ifindex)
	a4 := resolver.As4()
	if err := bus.Call("SetLinkDNS", idx, []linkDNS{{Family: syscall.AF_INET, Address: a4[:]}}); err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDNS: %w", err)
	}
	if err := bus.Call("SetLinkDomains", idx, []linkDomain{{Domain: domain, RoutingOnly: false}}); err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDomains: %w", err)
	}
	// Both appeared in systemd 240; an older resolved routes by domain
	// only when the link has no DNS default route anyway.
	if err := bus.Call("SetLinkDefaultRoute", idx, false); err != nil && !unknownMethod(err) {
		return fmt.Errorf("systemd-resolved SetLinkDefaultRoute: %w", err)
	}
	// Our answers are unsigned by design; a host with DNSSEC=yes would
	// refuse them.
	if err := bus.Call("SetLinkDNSSEC", idx, "no"); err != nil && !unknownMethod(err) {
		return fmt.Errorf("systemd-resolved SetLinkDNSSEC: %w", err)
	}
	return nil
}

// errUnknownMethod is what a fake bus returns for a method it lacks; the
// real bus's error names org.freedesktop.DBus.Error.UnknownMethod.
var errUnknownMethod = errors.New("org.freedesktop.DBus.Error.UnknownMethod")

func unknownMethod(err error) bool {
	return errors.Is(err, errUnknownMethod) || strings.Contains(err.Error(), "UnknownMethod")
}

// revertLink drops everything setLink set.
func revertLink(bus Bus, ifindex int) error {
	if err := bus.Call("RevertLink", int32(ifindex)); err != nil {
		return fmt.Errorf("systemd-resolved RevertLink: %w", err)
	}
	return nil
}

// resolvedRunning is a cheap check before dialling the bus.
func resolvedRunning() bool {
	_, err := os.Stat("/run/systemd/resolve")
	return err == nil
}

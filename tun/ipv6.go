package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrIPv6Off means the host has IPv6 turned off, so the device takes no
// IPv6 address.
var ErrIPv6Off = errors.New("IPv6 is turned off on this host (sysctl net.ipv6.conf.all.disable_ipv6 or net.ipv6.conf.default.disable_ipv6 is 1)")

// AddOverlay6 gives the device the node's IPv6 overlay address (a /128)
// and routes the mesh's IPv6 prefix into it from that address. It fails
// where the host has IPv6 turned off (net.ipv6.conf.*.disable_ipv6); the
// IPv4 overlay works without it.
func (d *Device) AddOverlay6(a netip.Addr, prefix netip.Prefix) error {
	if !a.Is6() || a.Is4In6() || !prefix.Addr().Is6() || !prefix.Contains(a) {
		return fmt.Errorf("tun: IPv6 overlay address %v is not an IPv6 address in %v", a, prefix)
	}
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", d.name, err)
	}
	// NODAD: nobody else is on a TUN link, and a tentative address would
	// refuse binds for a second or two.
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrAdd(link, addr); err != nil {
		if errors.Is(err, unix.EACCES) {
			// What the kernel says when IPv6 is off on the interface.
			return fmt.Errorf("add address %v to %s: %w", a, d.name, ErrIPv6Off)
		}
		return fmt.Errorf("add address %v to %s: %w", a, d.name, err)
	}
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: prefix.Masked().Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 128)},
		Src:       a.AsSlice(),
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("add route %v via %s: %w", prefix, d.name, err)
	}
	return nil
}

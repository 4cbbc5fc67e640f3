// Package tun creates the agent's TUN device and configures its address,
// MTU and routes with netlink.
package tun

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// DefaultMTU leaves room for WireGuard's 60 bytes of IPv4 overhead (and a
// TURN channel header) inside a 1500-byte path.
const DefaultMTU = 1420

// Config describes the device to create.
type Config struct {
	Name string
	MTU  int
	// Addr is the node's overlay address; it is assigned as a /32.
	Addr netip.Addr
	// Routes are sent into the device (the overlay prefix).
	Routes []netip.Prefix
}

// Device is a configured TUN device. Closing it removes the interface and,
// with it, its addresses and routes.
type Device struct {
	wgtun.Device
	name string
}

// IfName returns the interface name.
func (d *Device) IfName() string { return d.name }

// CheckPrivileges tells, before anything is created, whether this process
// may create and configure a TUN device.
func CheckPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	if hasCapNetAdmin() {
		return nil
	}
	return errors.New("creating the TUN device needs root or the CAP_NET_ADMIN capability (run with sudo, or grant CAP_NET_ADMIN)")
}

// hasCapNetAdmin reads the effective capability set of this process.
func hasCapNetAdmin() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "CapEff:") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapEff:")), 16, 64)
		if err != nil {
			return false
		}
		const capNetAdmin = 12
		return v&(1<<capNetAdmin) != 0
	}
	return false
}

// Create makes the TUN device and configures it. On error nothing is left behind.
func Create(cfg Config) (*Device, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("tun: overlay address %v is not IPv4", cfg.Addr)
	}
	if _, err := net.InterfaceByName(cfg.Name); err == nil {
		return nil, fmt.Errorf("tun: interface %q already exists (is another meshvpn running? pick another with --tun)", cfg.Name)
	}
	dev, err := wgtun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN %q: %w", cfg.Name, err)
	}
	name, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("TUN name: %w", err)
	}
	if err := configure(name, cfg); err != nil {
		dev.Close()
		return nil, err
	}
	return &Device{Device: dev, name: name}, nil
}

func configure(name string, cfg Config) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("set MTU of %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.Addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %v to %s: %w", cfg.Addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
			Src:       cfg.Addr.AsSlice(),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %v via %s: %w", p, name, err)
		}
	}
	return nil
}

// AddAddr gives the device one more local address (a /32), e.g. the
// agent's DNS resolver: the kernel then delivers packets to it locally,
// like to the node's own address, without them entering the tunnel.
func (d *Device) AddAddr(a netip.Addr) error {
	if !a.Is4() {
		return fmt.Errorf("tun: address %v is not IPv4", a)
	}
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", d.name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %v to %s: %w", a, d.name, err)
	}
	return nil
}

// Index is the interface index, or 0 when the device is gone.
func (d *Device) Index() int {
	ifc, err := net.InterfaceByName(d.name)
	if err != nil {
		return 0
	}
	return ifc.Index
}

package agent

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"

	"github.com/meshvpn/meshvpn/internal/sockbuf"
)

// iceNet is the network view given to ICE. With a wildcard socket ICE lists
// every interface address as a host candidate; the overlay's own TUN device
// must not be one (a check sent into the tunnel that the check is meant to
// build loops), nor loopback, nor an IPv6 link-local address (it means
// nothing without the interface's zone, which a candidate cannot carry to
// the peer). The list is re-read on each call because interfaces come and
// go on laptops.
type iceNet struct {
	*stdnet.Net
	skip string // TUN device name
}

func newICENet(tunName string) (*iceNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	return &iceNet{Net: n, skip: tunName}, nil
}

func (n *iceNet) Interfaces() ([]*transport.Interface, error) {
	if err := n.Net.UpdateInterfaces(); err != nil {
		return nil, err
	}
	all, err := n.Net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, ifc := range all {
		if !n.keep(ifc.Name, ifc.Flags) {
			continue
		}
		out = append(out, withoutLinkLocal(ifc))
	}
	return out, nil
}

func (n *iceNet) keep(name string, flags net.Flags) bool {
	if name == n.skip || flags&net.FlagLoopback != 0 || flags&net.FlagUp == 0 {
		return false
	}
	// Our other instances and Tailscale route 100.64.0.0/10 too: never candidates.
	for _, p := range []string{"meshvpn", "tailscale"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// withoutLinkLocal is ifc without its IPv6 link-local addresses (a copy:
// stdnet's interfaces are shared), or ifc itself when it has none.
func withoutLinkLocal(ifc *transport.Interface) *transport.Interface {
	addrs, err := ifc.Addrs()
	if err != nil || !slices.ContainsFunc(addrs, isLinkLocal6) {
		return ifc
	}
	c := transport.NewInterface(ifc.Interface)
	for _, a := range addrs {
		if !isLinkLocal6(a) {
			c.AddAddress(a)
		}
	}
	return c
}

func isLinkLocal6(a net.Addr) bool {
	ipn, ok := a.(*net.IPNet)
	return ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast()
}

// ListenPacket opens the sockets of TURN allocations over UDP (the shared
// socket is WireGuard's) with large buffers: relayed traffic is bursty.
func (n *iceNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		sockbuf.Grow(c)
	}
	return c, err
}

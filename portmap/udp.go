package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jackpal/gateway"
)

// pmpServerPort is where NAT-PMP and PCP servers listen (both use 5351; the
// first byte of a message, the version, tells them apart).
const pmpServerPort = 5351

// maxAnswer bounds what we read: PCP messages are at most 1100 bytes.
const maxAnswer = 1100

// roundTrip sends req to server from a fresh socket and returns the first
// answer accept takes, resending with doubling intervals (from 100 ms, as a
// lost datagram must not cost the whole budget) until ctx ends. Answers
// accept refuses (stray or garbage datagrams) are skipped, and so is
// anything not from server's address and port.
func roundTrip(ctx context.Context, server netip.AddrPort, req []byte, accept func([]byte) bool) ([]byte, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, maxAnswer)
	interval := 100 * time.Millisecond
	for sends := 0; sends < 10; sends++ {
		if _, err := c.Write(req); err != nil {
			return nil, fmt.Errorf("send to %s: %w", server, err)
		}
		next := time.Now().Add(interval)
		interval *= 2
		for {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: no answer: %w", server, ctx.Err())
			}
			_ = c.SetReadDeadline(next)
			if ctx.Err() != nil { // AfterFunc may have fired before our deadline
				return nil, fmt.Errorf("%s: no answer: %w", server, ctx.Err())
			}
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // resend
				}
				// ICMP port unreachable: nothing listens there.
				return nil, fmt.Errorf("%s: %w", server, err)
			}
			// The connected socket gets datagrams from server only; say so
			// here too, since a LAN neighbour can answer NAT-PMP and PCP.
			if from.Addr().Unmap() != server.Addr() || from.Port() != server.Port() {
				continue
			}
			if accept(buf[:n]) {
				return append([]byte(nil), buf[:n]...), nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no answer after 10 tries", server)
}

// findGateway returns the configured gateway or the default route's.
func findGateway(cfg Config) (netip.Addr, error) {
	if cfg.Gateway.IsValid() {
		return cfg.Gateway.Unmap(), nil
	}
	ip, err := gateway.DiscoverGateway()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find default gateway: %w", err)
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || !a.Unmap().Is4() {
		return netip.Addr{}, fmt.Errorf("default gateway %v is not IPv4", ip)
	}
	return checkGateway(a.Unmap())
}

// checkGateway refuses what is no router: a default route straight onto a
// link (no via) gives 0.0.0.0, and a request "to" it would go to this
// host's own port 5351.
func checkGateway(a netip.Addr) (netip.Addr, error) {
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%w: the default route names no router (%s)", ErrNoGateway, a)
	}
	return a, nil
}

// localAddrTo is this host's address on the route to gw: what the gateway
// sees as the client's address, and where it must forward to. Connecting a
// UDP socket sends nothing.
func localAddrTo(gw netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, pmpServerPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to gateway %s: %w", gw, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// epoch follows a NAT-PMP/PCP server's epoch (seconds since it started or
// lost its mappings) to notice a reboot: the server's clock must advance at
// least about as fast as ours (RFC 6886 3.6, RFC 6887 8.5).
type epoch struct {
	valid bool
	last  uint32
	at    time.Time
}

// observe records the epoch e seen at now and reports whether the server
// lost its state since the previous observation.
func (ep *epoch) observe(e uint32, now time.Time) (reset bool) {
	if ep.valid {
		elapsed := uint32(max(0, now.Sub(ep.at)/time.Second))
		// Allow 1/8 clock drift and 2 s of rounding, as the RFCs do.
		expect := int64(ep.last) + int64(elapsed)*7/8 - 2
		reset = int64(e) < expect || e < ep.last
	}
	ep.valid, ep.last, ep.at = true, e, now
	return reset
}

package portmap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// A NAT-PMP or PCP gateway multicasts an announcement to all hosts on port
// 5350 when it restarts or its external address changes (RFC 6886 3.2.1,
// RFC 6887 14.1.3). The epoch check in Refresh catches a reboot only when
// the router's new uptime is clearly below what the last answer promised;
// listening for the announcement catches it at once.

const announcePort = 5350

// announceGap is the least time between two announcements delivered. A
// gateway repeats its announcement with doubling gaps (RFC 6886 3.2.1:
// 250 ms, 500 ms, ... for about a minute), so later ones still get
// through; a LAN neighbour that forges the gateway's address cannot make
// the agent renew, and log, more often than this.
const announceGap = 5 * time.Second

// announceGate lets one announcement through per announceGap.
type announceGate struct{ last time.Time }

func (g *announceGate) allow(now time.Time) bool {
	if !g.last.IsZero() && now.Sub(g.last) < announceGap {
		return false
	}
	g.last = now
	return true
}

var allHosts = netip.AddrFrom4([4]byte{224, 0, 0, 1})

// Announcements delivers a value each time the gateway of the current
// mapping announces a change, until ctx ends. Announcements from any other
// address or port (the gateway sends them from its server port, 5351), and
// anything that is not a NAT-PMP or PCP announcement, are
// ignored. Bursts (gateways repeat their announcement) are merged: at most
// one value per announceGap.
func (c *Client) Announcements(ctx context.Context) (<-chan struct{}, error) {
	conn, err := net.ListenMulticastUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(allHosts, announcePort)))
	if err != nil {
		return nil, fmt.Errorf("listen for gateway announcements: %w", err)
	}
	out := make(chan struct{}, 1)
	context.AfterFunc(ctx, func() { conn.Close() })
	go func() {
		defer conn.Close()
		buf := make([]byte, maxAnswer)
		var gate announceGate
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// A transient error must not spin: wait a little.
				time.Sleep(100 * time.Millisecond)
				continue
			}
			c.mu.Lock()
			gw := c.gw
			c.mu.Unlock()
			if !isAnnouncement(buf[:n], from, netip.AddrPortFrom(gw, c.cfg.pmpPort)) || !gate.allow(time.Now()) {
				continue
			}
			c.log.Debug("gateway announced a change", "gateway", gw)
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}

// isAnnouncement tells whether b, from from, is a NAT-PMP external-address
// or PCP ANNOUNCE answer sent by the gateway's server gw.
func isAnnouncement(b []byte, from, gw netip.AddrPort) bool {
	if !gw.Addr().IsValid() || from.Addr().Unmap() != gw.Addr() || from.Port() != gw.Port() {
		return false
	}
	if r, err := parsePMPResponse(b); err == nil && r.Op == pmpOpExternalAddr && r.Result == 0 {
		return true
	}
	if r, err := parsePCPResponse(b); err == nil && r.Op == pcpOpAnnounce && r.Result == 0 {
		return true
	}
	return false
}

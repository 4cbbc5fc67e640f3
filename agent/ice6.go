package agent

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// IPv6 underlay.
//
// The shared socket is wireguard-go's StdNetBind, which opens two sockets
// on one port: an AF_INET one and an AF_INET6 one with IPV6_V6ONLY. We keep
// the two rather than one dual-stack socket because the IPv4 socket then
// stays a plain IPv4 socket: the low-TTL opening packets (IP_TTL on a
// duplicate of it, datapath/lowttl.go), GSO/GRO and the birthday code work on IPv4
// as before, and a host whose kernel has no IPv6 still opens its IPv4 side.
// ICE's mux sees both through stunConn, whose wildcard address is the IPv6
// one so that the host's IPv6 addresses become host candidates as well.
//
// Path preference. A direct path over IPv6 beats any relayed path (the
// direct lane always beats the relay lane). Between IPv6 and IPv4 direct
// we let ICE's pair priorities decide, and they prefer IPv6 in practice: a
// global IPv6 address is a host candidate (type preference 126) while an
// IPv4 path through a NAT is server- or peer-reflexive (100, 110), and a
// valid host pair is nominated at once, the others after a wait. So IPv6
// wins whenever the IPv4 side is NATed; where both families give pairs of
// the same types (a LAN, public hosts), preferIPv6 breaks the tie. We
// do not switch a working IPv6 path to IPv4 on a measured RTT difference:
// the IPv6 path has no NAT on it, so no mapping to expire or be moved by a
// conntrack clash and nothing for a NAT reboot to break, and a switch costs
// a WireGuard roam for a gain of a millisecond at best between two routes
// of one ISP. Tailscale makes the same call (IPv6 wins unless clearly
// slower); RFC 8421 asks for IPv6 first as well.

// iceSTUN are the STUN servers of direct sessions: the IPv4 ones and the
// coordinator's IPv6 ones (Netmap.STUN6), which the NAT probes (IPv4) skip.
func (a *Agent) iceSTUN() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append(slices.Clip(a.stun), a.stun6...)
}

// ipv6Boost is what preferIPv6 adds to an IPv6 remote candidate's
// priority: half a candidate-type step (type preference is the top byte),
// so the candidate ranks above every IPv4 one of its type and below the
// next type.
const ipv6Boost = 1 << 23

// preferIPv6 returns remote candidate c with its priority raised by
// ipv6Boost when it is IPv6, as both sides do with the other's. A pair's
// priority is 2^32·min(G,D) + 2·max(G,D) + …: raising only the remote
// side never lifts an IPv6 pair above a pair of better types, and breaks
// the tie between two pairs of the same types (host/host over IPv6 and
// over IPv4, on a LAN or between public hosts) for IPv6, where it
// otherwise went to whichever pion listed first.
func preferIPv6(c ice.Candidate) ice.Candidate {
	if !ipv6Candidate(c) || c.Priority() > math.MaxUint32-ipv6Boost {
		return c
	}
	f := strings.Fields(c.Marshal())
	if len(f) < 4 {
		return c
	}
	f[3] = strconv.FormatUint(uint64(c.Priority())+ipv6Boost, 10)
	out, err := ice.UnmarshalCandidate(strings.Join(f, " "))
	if err != nil {
		return c
	}
	return out
}

// stunURIs parses host:port STUN servers into ICE's URLs; bad ones are
// logged and skipped.
func (a *Agent) stunURIs(servers []string) []*stun.URI {
	var urls []*stun.URI
	for _, s := range servers {
		u, err := stun.ParseURI("stun:" + s)
		if err != nil {
			a.log.Warn("bad STUN server from coordinator", "server", s, "err", err)
			continue
		}
		urls = append(urls, u)
	}
	return urls
}

// srflxMux is the mux ICE asks for server-reflexive candidates. ICE asks
// every STUN server from every local address and makes a candidate of each
// answer. Two kinds are refused here, so that the peer gets one srflx per
// family and server and no copies of host candidates:
//   - a server of the other family than the local address (an IPv4 srflx
//     "from" an IPv6 host address);
//   - over IPv6, an answer that is the local address itself (no NAT, the
//     usual case): RFC 8445 5.1.3 drops such a redundant candidate, and
//     the selected pair then reads host, not srflx, in status. (IPv4
//     keeps it: a public IPv4 host's srflx tells peers its address.)
type srflxMux struct {
	*ice.UniversalUDPMuxDefault
}

func (m srflxMux) GetConnForURL(ufrag, url string, addr net.Addr) (net.PacketConn, error) {
	ua, ok := addr.(*net.UDPAddr)
	u, err := stun.ParseURI(url)
	if !ok || err != nil {
		return m.UniversalUDPMuxDefault.GetConnForURL(ufrag, url, addr)
	}
	ip, err := netip.ParseAddr(u.Host)
	if err != nil {
		return m.UniversalUDPMuxDefault.GetConnForURL(ufrag, url, addr)
	}
	ip = ip.Unmap()
	if ip.Is4() != (ua.IP.To4() != nil) {
		return nil, fmt.Errorf("STUN server %s and local address %v differ in family", u.Host, ua.IP)
	}
	if ip.Is4() {
		return m.UniversalUDPMuxDefault.GetConnForURL(ufrag, url, addr) // IPv4 as it always was
	}
	// ICE has just asked this server: the answer comes from the mux's cache.
	server := &net.UDPAddr{IP: ip.AsSlice(), Port: u.Port}
	if mapped, err := m.GetXORMappedAddr(server, iceSTUNGatherTimeout); err == nil && mapped.IP.Equal(ua.IP) && mapped.Port == ua.Port {
		return nil, fmt.Errorf("STUN server %s sees the local address %v: no srflx candidate needed", u.Host, ua)
	}
	return m.UniversalUDPMuxDefault.GetConnForURL(ufrag, url, addr)
}

// relayIPv6 tells whether the relay at server (host:port) is reached over
// IPv6: an address literal says so itself; a name goes by its first
// address, in the resolver's order (RFC 6724: a family the host has no
// route for comes last).
func relayIPv6(ctx context.Context, server string) (bool, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return false, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return !ip.Unmap().Is4(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return false, fmt.Errorf("resolve %s: no address", host)
	}
	return !ips[0].Unmap().Is4(), nil
}

// turnTransports are the networks ICE reaches relay t over. The relayed
// address is IPv4 either way (the relay lane's candidates are UDP4): an
// IPv6-only host gets an IPv4 relay address over IPv6 (RFC 6156), which
// IPv4-only peers can reach.
func (t relayTarget) turnTransports() []ice.NetworkType {
	if t.IPv6 {
		return []ice.NetworkType{ice.NetworkTypeUDP6, ice.NetworkTypeTCP6}
	}
	return []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeTCP4}
}

// network is "udp4"/"tcp4" or "udp6"/"tcp6" for proto ("udp", "tcp") by
// the relay's family.
func (t relayTarget) network(proto string) string {
	if t.IPv6 {
		return proto + "6"
	}
	return proto + "4"
}

// ipv6Candidate tells whether c has an IPv6 address.
func ipv6Candidate(c ice.Candidate) bool {
	ip, err := netip.ParseAddr(c.Address())
	return err == nil && !ip.Unmap().Is4()
}

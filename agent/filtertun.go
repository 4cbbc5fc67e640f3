package agent

import (
	"net/netip"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/filter"
	"github.com/meshvpn/meshvpn/policy"
)

// filterTUN puts the policy's packet filter between the TUN device and
// WireGuard: what wireguard-go reads from the device is outbound, what it
// writes is inbound. It wraps any tun.Device, so other wrappers (the DNS
// resolver's) compose with it in either order.
type filterTUN struct {
	wgtun.Device
	f *filter.Filter
}

func (t *filterTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if n > 0 {
		// Dropped packets get size 0, which wireguard-go skips: no copy.
		t.f.Outbound(bufs[:n], sizes[:n], offset)
	}
	return n, err
}

func (t *filterTUN) Write(bufs [][]byte, offset int) (int, error) {
	n := len(bufs)
	keep := t.f.Inbound(bufs, offset)
	if len(keep) == 0 {
		return n, nil
	}
	if _, err := t.Device.Write(keep, offset); err != nil {
		return 0, err
	}
	return n, nil
}

// setPolicyFilter records the filter the coordinator sent (nil: no
// policy) and applies it; a delta without one leaves it as it is.
func (a *Agent) setPolicyFilter(f *policy.Filter) {
	a.mu.Lock()
	a.policyFilter = f
	a.mu.Unlock()
}

// refreshFilter rebuilds the packet filter's rules from the policy filter
// and the current peers (rules name peers by name and tag).
func (a *Agent) refreshFilter() {
	if a.filter == nil {
		return
	}
	// Never a peer's lock under a.mu: a peer starting a session holds its
	// own lock and then takes a.mu (stunURLs), so the other order deadlocks
	// (seen in make bench-mesh).
	a.mu.Lock()
	pf := a.policyFilter
	a.mu.Unlock()
	list := a.peerList()
	peers := make([]filter.Peer, 0, len(list))
	for _, p := range list {
		p.mu.Lock()
		n := p.node
		p.mu.Unlock()
		peers = append(peers, filterPeer(n, a.peerIP6(n)))
	}
	a.filter.Set(pf, peers)
}

// filterPeer is what the filter matches n by; ip6 is its IPv6 overlay
// address (zero for none): the rules hold for both addresses.
func filterPeer(n control.Node, ip6 netip.Addr) filter.Peer {
	ip, _ := netip.ParseAddr(n.IP)
	return filter.Peer{IP: ip, IP6: ip6, Name: n.Name, Tags: n.Tags}
}

package filter

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/policy"
)

// Peer is what the filter knows of a peer to match rules against it.
type Peer struct {
	IP netip.Addr
	// IP6 is the peer's IPv6 overlay address (zero when it has none): its
	// packets from either address meet the same rules.
	IP6  netip.Addr
	Name string
	Tags []string
}

// Filter decides, packet by packet, what passes between the TUN device and
// WireGuard. With no rules set (no policy) everything passes at the cost
// of one atomic load per batch.
//
// Outbound (from this host to a peer): passes if this node's Out rules
// allow it or it belongs to a tracked connection. Inbound (from a peer):
// passes if this node's In rules allow it or it belongs to a tracked
// connection. Every passed packet starts or refreshes its connection, so
// replies flow both ways.
type Filter struct {
	rules atomic.Pointer[ruleSet]

	mu sync.Mutex
	ct *conntrack
	// drops counts dropped packets per peer address; entries live as long
	// as the filter, for the peers it was ever told of.
	drops map[netip.Addr]*dropCount
	// other counts drops to or from addresses of no peer.
	other dropCount
}

type dropCount struct{ in, out atomic.Uint64 }

type ruleSet struct {
	peers map[netip.Addr]*peerRules
}

type peerRules struct {
	in, out []portRule
	drops   *dropCount
}

type portRule struct {
	proto uint8
	ports []policy.PortRange
}

// New makes a filter that passes everything until rules are set.
func New() *Filter {
	return &Filter{ct: newConntrack(DefaultMaxConns), drops: map[netip.Addr]*dropCount{}}
}

// Set installs a node's filter rules matched against its peers. A nil
// filter, or one with AllowAll, lifts filtering.
func (f *Filter) Set(pf *policy.Filter, peers []Peer) {
	if pf == nil || pf.AllowAll {
		f.rules.Store(nil)
		return
	}
	rs := &ruleSet{peers: make(map[netip.Addr]*peerRules, len(peers))}
	f.mu.Lock()
	for _, p := range peers {
		d := f.drops[p.IP]
		if d == nil {
			d = &dropCount{}
			f.drops[p.IP] = d
		}
		pr := &peerRules{in: match(pf.In, p), out: match(pf.Out, p), drops: d}
		rs.peers[p.IP] = pr
		if p.IP6.IsValid() {
			f.drops[p.IP6] = d
			rs.peers[p.IP6] = pr
		}
	}
	f.mu.Unlock()
	f.rules.Store(rs)
}

func match(rules []policy.Rule, p Peer) []portRule {
	var out []portRule
	for _, r := range rules {
		if slices.ContainsFunc(r.Peers, func(a string) bool {
			// An address atom names the peer by either of its addresses.
			return policy.MatchAtom(a, p.Name, p.IP, p.Tags) || (p.IP6.IsValid() && policy.MatchAtom(a, p.Name, p.IP6, p.Tags))
		}) {
			out = append(out, portRule{proto: r.Proto, ports: r.Ports})
		}
	}
	return out
}

func allowed(rules []portRule, p *packet) bool {
	for _, r := range rules {
		if r.proto != 0 && r.proto != p.proto && !(r.proto == protoICMPv6 && p.icmp6) {
			continue
		}
		if p.fragment || policy.PortsMatch(r.ports, p.proto, p.dstPort) {
			return true
		}
	}
	return false
}

// Active tells whether rules are in force.
func (f *Filter) Active() bool { return f.rules.Load() != nil }

// Outbound filters a batch read from the TUN device: a dropped packet's
// size is set to 0, which wireguard-go skips.
func (f *Filter) Outbound(bufs [][]byte, sizes []int, offset int) {
	rs := f.rules.Load()
	if rs == nil {
		return
	}
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range sizes {
		if sizes[i] > 0 && !f.pass(rs, bufs[i][offset:offset+sizes[i]], true, now) {
			sizes[i] = 0
		}
	}
}

// Inbound filters a batch WireGuard decrypted, in place, and returns the
// packets that pass.
func (f *Filter) Inbound(bufs [][]byte, offset int) [][]byte {
	rs := f.rules.Load()
	if rs == nil {
		return bufs
	}
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := bufs[:0]
	for _, b := range bufs {
		if f.pass(rs, b[offset:], false, now) {
			keep = append(keep, b)
		}
	}
	return keep
}

// pass judges one packet; f.mu is held.
func (f *Filter) pass(rs *ruleSet, b []byte, out bool, now int64) bool {
	p, err := parse(b)
	if err != nil {
		// Not IPv4 (the overlay has no IPv6 yet) or malformed: nothing a
		// rule could allow.
		f.other.count(out)
		return false
	}
	peerIP, local, remote := p.src, p.dstPort, p.srcPort
	if out {
		peerIP, local, remote = p.dst, p.srcPort, p.dstPort
	}
	pr := rs.peers[peerIP]
	if pr == nil {
		f.other.count(out)
		return false
	}
	if q := p.inner; q != nil {
		// An ICMP error about a tracked connection with this same peer
		// passes with it. The quoted packet went the other way.
		k := connKey{q.proto, q.dst, q.srcPort, q.dstPort} // we sent it
		if out {
			k = connKey{q.proto, q.src, q.dstPort, q.srcPort} // the peer sent it
		}
		if k.peer == peerIP && f.ct.alive(k, now) {
			return true
		}
	}
	k := connKey{p.proto, peerIP, local, remote}
	if f.ct.seen(k, &p, now) {
		return true
	}
	rules := pr.in
	if out {
		rules = pr.out
	}
	if !allowed(rules, &p) {
		pr.drops.count(out)
		return false
	}
	f.ct.track(k, &p, now)
	return true
}

func (d *dropCount) count(out bool) {
	if out {
		d.out.Add(1)
	} else {
		d.in.Add(1)
	}
}

// PeerInfo describes the filter's view of one peer for status: what this
// node may open to it ("" with no policy, "blocked by policy" when
// nothing), whether a ping would be dropped, and the packets dropped in
// and out.
func (f *Filter) PeerInfo(ip netip.Addr) (open string, pingBlocked bool, in, out uint64) {
	f.mu.Lock()
	if d := f.drops[ip]; d != nil {
		in, out = d.in.Load(), d.out.Load()
	}
	f.mu.Unlock()
	rs := f.rules.Load()
	if rs == nil {
		return "", false, in, out
	}
	pr := rs.peers[ip]
	if pr == nil || len(pr.out) == 0 {
		return "blocked by policy", true, in, out
	}
	echo := packet{proto: protoICMP, icmpType: icmpEcho}
	return describe(pr.out), !allowed(pr.out, &echo), in, out
}

// describe summarises rules as "tcp 22,80; icmp" ("port 22": any protocol).
func describe(rules []portRule) string {
	var parts []string
	for _, r := range rules {
		s := protoName(r.proto)
		if r.proto == 0 || r.proto == protoTCP || r.proto == protoUDP {
			var ps []string
			for _, pr := range r.ports {
				switch {
				case pr.First == 0 && pr.Last == 65535:
					ps = append(ps, "*")
				case pr.First == pr.Last:
					ps = append(ps, fmt.Sprint(pr.First))
				default:
					ps = append(ps, fmt.Sprintf("%d-%d", pr.First, pr.Last))
				}
			}
			if r.proto == 0 {
				s = "port " + strings.Join(ps, ",") // any protocol
			} else {
				s += " " + strings.Join(ps, ",")
			}
		}
		if !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}

func protoName(p uint8) string {
	switch p {
	case 0:
		return "any"
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto %d", p)
}

// Conns is how many connections are tracked.
func (f *Filter) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ct.conns)
}

package agent

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/pion/ice/v4"
)

// Paths a peer's packets can take.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathNone   = "none"
	// PathIdle: a path set up on demand that is not set up now (never
	// used, or torn down after --lazy-idle without traffic).
	PathIdle = "idle"
)

// Status is what `meshvpn status` shows; its JSON form is a stable interface.
type Status struct {
	Self        SelfStatus        `json:"self"`
	Coordinator CoordinatorStatus `json:"coordinator"`
	Peers       []PeerStatus      `json:"peers"`
	// WireGuardPeers are the public keys the WireGuard device has peers
	// for, read from the device itself: what `wg show` would list.
	WireGuardPeers []string `json:"wireguard_peers"`
}

// SelfStatus describes this node.
type SelfStatus struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// IP6 is the node's IPv6 overlay address; absent when the coordinator
	// gave none or the host has IPv6 turned off.
	IP6        string   `json:"ip6,omitempty"`
	PublicKey  string   `json:"public_key"`
	Tags       []string `json:"tags"`
	ListenPort int      `json:"listen_port"`
	TUN        string   `json:"tun"`
	// Endpoints are the addresses peers can reach this node at, as its ICE
	// sessions gathered them (host and server-reflexive).
	Endpoints []EndpointStatus `json:"endpoints"`
	// NAT is what probing found: "symmetric", "udp-blocked" or empty.
	NAT string `json:"nat,omitempty"`
	// Relays are the TURN servers the coordinator offered, and whether
	// each works from here.
	Relays []RelayStatus `json:"relays"`
	// PortMap is the port forward this node got from its gateway (PCP,
	// NAT-PMP or UPnP); absent with --no-portmap. See portmap.go.
	PortMap *PortMapStatus `json:"portmap,omitempty"`
	// DNS is the mesh resolver and how the host uses it.
	DNS *DNSStatus `json:"dns"`
	// LazyPeers is the --lazy-peers mode; Lazy whether paths are set up
	// on demand now, LazyIdleS after how many seconds without traffic
	// they are torn down.
	LazyPeers string `json:"lazy_peers"`
	Lazy      bool   `json:"lazy"`
	LazyIdleS int    `json:"lazy_idle_s"`
}

// DNSStatus describes names in the mesh on this node.
type DNSStatus struct {
	// Domain is the mesh's DNS domain: peers are NAME.Domain.
	Domain string `json:"domain"`
	// Resolver is the address the resolver answers on; empty when it could
	// not start.
	Resolver string `json:"resolver"`
	// Mode is how the host's DNS uses it: "resolved" (systemd-resolved,
	// per link), "resolv.conf" (rewritten while the agent runs) or "off"
	// (--accept-dns=false, or it could not be set).
	Mode string `json:"mode"`
}

// EndpointStatus is one local candidate address.
type EndpointStatus struct {
	Addr string `json:"addr"`
	Type string `json:"type"`
}

// CoordinatorStatus tells whether the control stream is up.
type CoordinatorStatus struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
}

// PeerStatus describes the path to one peer.
type PeerStatus struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// IP6 is the peer's IPv6 overlay address, absent when it has none.
	IP6       string   `json:"ip6,omitempty"`
	PublicKey string   `json:"public_key"`
	Tags      []string `json:"tags"`
	Online    bool     `json:"online"`
	// DNSName is the name the mesh resolver answers for the peer.
	DNSName string `json:"dns_name"`
	// Path is "direct", "relay", "none" or "idle" (lazy.go); Reason says
	// why when not direct,
	// and "no answer for N s" when the path's lane is down and the peer has
	// not answered what we sent for that long (after 15 s: path "none").
	Path     string `json:"path"`
	Reason   string `json:"reason,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	// LocalType and RemoteType are the candidate types of the pair in use.
	LocalType  string `json:"local_type,omitempty"`
	RemoteType string `json:"remote_type,omitempty"`
	// Family is the address family the path's packets travel over, "ipv4"
	// or "ipv6": the endpoint's on a direct path, the relay server's on a
	// relayed one.
	Family string `json:"family,omitempty"`
	// Relay describes the relay the path goes through (path "relay").
	Relay *RelayPathStatus `json:"relay,omitempty"`
	// ICEState is the direct session's state, RelayICEState the relay
	// session's ("none" when there is none).
	ICEState      string `json:"ice_state"`
	RelayICEState string `json:"relay_ice_state"`
	// LastChange says what last changed the path, and when.
	LastChange string `json:"last_change,omitempty"`
	ChangedAt  string `json:"changed_at,omitempty"`
	// DirectAfterMs is how long the first direct path took from when this
	// agent saw the peer come online; absent before one.
	DirectAfterMs int64 `json:"direct_after_ms,omitempty"`
	// Punch is the punching under way, absent when none runs: a birthday
	// punch (birthday.go), "birthday punch 2: probing ports of 198.18.3.2,
	// 0.4 s, 812 probes"; a synchronized open (syncopenstatus.go),
	// "synchronized open 1: sending at +120 ms (clock offset 3.1 ms ± 0.4
	// ms)"; checks held back for the punch order, or the quiet wait after
	// a failed first session (punchstatus.go).
	Punch string `json:"punch,omitempty"`
	// ICEFailures counts sessions (both lanes) that failed.
	ICEFailures int `json:"ice_failures"`
	// LastHandshake is empty before the first WireGuard handshake.
	LastHandshake string `json:"last_handshake"`
	// LastRx is when the last WireGuard packet from the peer arrived (to
	// about a second; see liveness.go), empty before the first.
	LastRx  string  `json:"last_rx"`
	RxBytes uint64  `json:"rx_bytes"`
	TxBytes uint64  `json:"tx_bytes"`
	RTTMs   float64 `json:"rtt_ms"`
	// Policy is empty when no access policy is set; otherwise what this
	// node may open to the peer ("tcp 22; icmp"), or "blocked by policy"
	// (the peer may still open connections to us, and we answer).
	Policy string `json:"policy,omitempty"`
	// PingBlocked: the policy drops our ICMP echo requests to the peer.
	PingBlocked bool `json:"ping_blocked,omitempty"`
	// PolicyDropsIn and PolicyDropsOut count packets from and to the peer
	// that the policy dropped.
	PolicyDropsIn  uint64 `json:"policy_drops_in"`
	PolicyDropsOut uint64 `json:"policy_drops_out"`
	// Queued is how many packets wait for the path being set up;
	// QueueDropped counts those dropped (queue full, or waited too long).
	Queued       int    `json:"queued,omitempty"`
	QueueDropped uint64 `json:"queue_dropped,omitempty"`
}

// RelayPathStatus is the relay a peer's packets go through.
type RelayPathStatus struct {
	URL string `json:"url"`
	// Server is the TURN server's host:port; Transport how we reach it:
	// udp, tcp or tls.
	Server    string `json:"server"`
	Transport string `json:"transport"`
	// Node is the member running the relay (a peer relay); 0 for the
	// coordinator's relay and external servers.
	Node uint64 `json:"node,omitempty"`
	// Allocation is our relayed address on the server.
	Allocation string `json:"allocation,omitempty"`
}

// RelayStatus is one relay the coordinator offered and what its last
// check found.
type RelayStatus struct {
	URL       string  `json:"url"`
	Server    string  `json:"server"`
	Transport string  `json:"transport"`
	Available bool    `json:"available"`
	Error     string  `json:"error,omitempty"`
	RTTMs     float64 `json:"rtt_ms,omitempty"`
	Checked   string  `json:"checked,omitempty"`
	// Node is the member running the relay (a peer relay), as in
	// RelayPathStatus; Chosen marks the relay new relay sessions use (the
	// nearest working one, see relayManager.choiceLocked).
	Node   uint64 `json:"node,omitempty"`
	Chosen bool   `json:"chosen,omitempty"`
}

// status reports the peer; wg holds WireGuard's counters for its key.
func (p *peer) status(wg wgPeerStats, haveWG bool, env pathEnv) PeerStatus {
	p.mu.Lock()
	st := PeerStatus{
		ID:            p.id,
		Name:          p.node.Name,
		IP:            p.node.IP,
		IP6:           addrString(p.a.peerIP6(p.node)),
		PublicKey:     p.key.String(),
		Tags:          nonNil(p.node.Tags),
		Online:        p.node.Online,
		ICEState:      "none",
		RelayICEState: "none",
		LastChange:    p.lastChange,
		ICEFailures:   p.direct.failures + p.relay.failures,
		DirectAfterMs: p.directAfter.Milliseconds(),
		Punch:         joinPunch(p.bd.punchStatus(time.Now()), p.punchStatusLocked(time.Now())),
	}
	bdayNote := p.bd.note
	if !p.changedAt.IsZero() {
		st.ChangedAt = p.changedAt.UTC().Format(time.RFC3339)
	}
	if p.direct.ice != nil {
		st.ICEState = p.direct.state.String()
	}
	if p.relay.ice != nil {
		st.RelayICEState = p.relay.state.String()
	}
	if p.relay.shared && p.relay.selected {
		st.RelayICEState = "shared channel" // relayshared.go
	}
	active := p.active
	var activeUp bool
	var agent *ice.Agent
	if active != nil {
		activeUp = active.up()
		agent = active.ice
		st.Endpoint = p.endpoint.String()
		if active.local != nil {
			st.LocalType = active.local.Type().String()
			st.RemoteType = candidateLabel(active.remote) // "portmap" for a port-mapped candidate
		}
		st.Family = family(active.relay() && active.target.IPv6)
		if active.relay() {
			st.Relay = &RelayPathStatus{URL: active.target.URL, Server: active.target.Server, Transport: active.target.Transport, Node: active.target.Node}
			if active.local != nil {
				st.Relay.Allocation = net.JoinHostPort(active.local.Address(), strconv.Itoa(active.local.Port()))
			} else if c := p.shared.ch; active.shared && c != nil {
				st.Relay.Allocation = c.c.relayedAddr().String()
			}
		}
	}
	live := p.live
	asleep, lastUsed := p.asleep, p.lastUsed
	why := reasonInput{
		online:      p.node.Online,
		controlling: p.controlling,
		direct:      laneInfo(&p.direct),
		relay:       laneInfo(&p.relay),
		peerNAT:     p.peerNAT,
		pathEnv:     env,
	}
	p.mu.Unlock()
	st.Queued, st.QueueDropped = p.queue.stats()

	if haveWG {
		st.RxBytes, st.TxBytes = wg.RxBytes, wg.TxBytes
		if !wg.LastHandshake.IsZero() {
			st.LastHandshake = wg.LastHandshake.UTC().Format(time.RFC3339)
		}
		// WireGuard roams to wherever authenticated packets come from.
		if wg.Endpoint != "" {
			st.Endpoint = wg.Endpoint
		}
	}
	if agent != nil {
		if ps, ok := agent.GetSelectedCandidatePairStats(); ok {
			st.RTTMs = ps.CurrentRoundTripTime * 1000
		}
	}
	if !live.lastRx.IsZero() {
		st.LastRx = live.lastRx.UTC().Format(time.RFC3339)
	}
	// A lane that is up has ICE consent: the pair answers. Otherwise only
	// packets coming back from the peer vouch for the last endpoint.
	verdict, quiet := pathAnswers, time.Duration(0)
	if active != nil && !activeUp {
		verdict, quiet = live.judge(time.Now())
	}
	switch {
	case asleep:
		st.Path, st.Endpoint = PathIdle, ""
		st.Reason = "set up on demand"
		switch {
		case !why.online:
			st.Reason = "peer offline"
		case st.LastChange != "not used yet":
			st.Reason = fmt.Sprintf("no traffic for %s; set up again on demand", time.Since(lastUsed).Round(time.Second))
		}
	case active == nil || verdict == pathDead:
		st.Path = PathNone
		st.Endpoint = ""
		st.Reason = why.none()
		if quiet > 0 {
			st.Reason += "; " + noAnswer(quiet)
		}
	case !active.relay():
		st.Path = PathDirect
		if verdict == pathSilent {
			st.Reason = noAnswer(quiet)
		}
	default:
		st.Path = PathRelay
		st.Reason = why.notDirect()
		if bdayNote != "" {
			st.Reason += "; " + bdayNote
		}
		if verdict == pathSilent {
			st.Reason = noAnswer(quiet) + "; " + st.Reason
		}
	}
	if st.Path == PathNone {
		st.Family = ""
	} else if ep, err := netip.ParseAddrPort(st.Endpoint); err == nil && st.Path == PathDirect {
		st.Family = family(!ep.Addr().Unmap().Is4())
	}
	return st
}

// joinPunch puts the punches under way in one line.
func joinPunch(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "; " + b
}

func family(ipv6 bool) string {
	if ipv6 {
		return "ipv6"
	}
	return "ipv4"
}

// pathEnv is what the agent knows about its own network, for reasons.
type pathEnv struct {
	localNAT  string // natSymmetric, natUDPBlocked or ""
	relayErr  string // why no relay is usable; "" when one is
	coordDown bool   // the control stream is down: no signalling
}

type laneState struct {
	session  bool
	answered bool
	state    ice.ConnectionState
	failures int
}

func laneInfo(l *lane) laneState {
	return laneState{session: l.ice != nil, answered: l.answered, state: l.state, failures: l.failures}
}

type reasonInput struct {
	online        bool
	controlling   bool
	direct, relay laneState
	peerNAT       string
	pathEnv
}

// notDirect says in a short phrase why a relayed peer has no direct path.
func (r reasonInput) notDirect() string {
	switch {
	case r.localNAT == natUDPBlocked:
		return "UDP blocked locally"
	case r.peerNAT == natUDPBlocked:
		return "UDP blocked at the peer"
	case r.localNAT == natSymmetric && r.peerNAT == natSymmetric:
		return "both behind symmetric NAT, no port mapping"
	case r.peerNAT == natSymmetric:
		return "peer behind symmetric NAT, no port mapping"
	case r.localNAT == natSymmetric:
		return "behind symmetric NAT here, no port mapping"
	case r.direct.state == ice.ConnectionStateDisconnected:
		return "direct path lost, checking it again"
	case r.direct.failures > 0:
		return "no direct candidate pair worked"
	}
	return "direct path not found yet"
}

// none says in a short phrase why a peer has no path at all.
func (r reasonInput) none() string {
	switch {
	case !r.online:
		return "peer offline"
	case r.coordDown:
		return "coordinator unreachable, no new session can be negotiated"
	case !r.direct.session && r.controlling:
		return "starting a session"
	case !r.direct.session:
		return "waiting for the peer's offer"
	case r.controlling && !r.direct.answered:
		return "offer sent, waiting for the peer's answer"
	case r.direct.state == ice.ConnectionStateDisconnected:
		return "path lost, checking candidates again"
	case r.direct.state == ice.ConnectionStateFailed || r.direct.failures > 0:
		if r.relayErr != "" {
			return r.notDirect() + "; relay unavailable: " + r.relayErr
		}
		return r.notDirect() + "; trying the relay"
	}
	return "checking candidate pairs"
}

func sortPeers(ps []PeerStatus) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

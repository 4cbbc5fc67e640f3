package meshlab

import "encoding/json"

// Status is the JSON printed by `meshvpn status --json`.
type Status struct {
	Self        SelfStatus   `json:"self"`
	Coordinator Coordination `json:"coordinator"`
	Peers       []PeerStatus `json:"peers"`
	// WireGuardPeers are the public keys the agent's WireGuard device has.
	WireGuardPeers []string `json:"wireguard_peers"`
}

// Coordination tells whether the agent's control stream is up.
type Coordination struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error"`
}

// SelfStatus describes the local node.
type SelfStatus struct {
	ID        uint64     `json:"id"`
	Name      string     `json:"name"`
	IP        string     `json:"ip"`
	IP6       string     `json:"ip6"` // IPv6 overlay address; empty for none
	PublicKey string     `json:"public_key"`
	Tags      []string   `json:"tags"`
	Endpoints []Endpoint `json:"endpoints"`
	NAT       string     `json:"nat"`
	Relays    []Relay    `json:"relays"`
	// PortMap is nil when the agent runs with --no-portmap.
	PortMap *PortMap `json:"portmap"`
	DNS     *DNS     `json:"dns"`
}

// DNS is the agent's mesh resolver and how the host uses it.
type DNS struct {
	Domain   string `json:"domain"`
	Resolver string `json:"resolver"`
	Mode     string `json:"mode"` // "resolved", "resolv.conf" or "off"
}

// PortMap is the agent's port forward on its router.
type PortMap struct {
	Protocol   string `json:"protocol"` // "pcp", "nat-pmp", "upnp"; empty without a mapping
	External   string `json:"external"` // ip:port peers are offered
	LeaseLeftS int64  `json:"lease_left_s"`
	Error      string `json:"error"`
}

// Relay is one TURN server the agent was offered and its last check.
type Relay struct {
	URL       string `json:"url"`
	Server    string `json:"server"`
	Transport string `json:"transport"`
	Available bool   `json:"available"`
	Error     string `json:"error"`
	// Node is the member running a peer relay (0 otherwise); Chosen marks
	// the relay new relay sessions use.
	Node   uint64  `json:"node"`
	Chosen bool    `json:"chosen"`
	RTTms  float64 `json:"rtt_ms"`
}

// RelayPath is the relay a peer's path goes through.
type RelayPath struct {
	URL       string `json:"url"`
	Server    string `json:"server"`
	Transport string `json:"transport"`
	// Allocation is the agent's relayed address on the server.
	Allocation string `json:"allocation"`
	// Node is the member running the relay, for a peer relay.
	Node uint64 `json:"node"`
}

// Endpoint is one address the node advertises. The agent prints objects
// ({"addr": "ip:port", "type": "srflx"}); a plain "ip:port" string is
// accepted too, since the contract only promised a list.
type Endpoint struct {
	Addr string `json:"addr"`
	Type string `json:"type"`
}

// UnmarshalJSON accepts an object or a bare address string.
func (e *Endpoint) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &e.Addr)
	}
	type plain Endpoint // no UnmarshalJSON: avoids recursion
	return json.Unmarshal(data, (*plain)(e))
}

func (e Endpoint) String() string {
	if e.Type == "" {
		return e.Addr
	}
	return e.Type + " " + e.Addr
}

// PeerStatus describes one peer and the path to it.
type PeerStatus struct {
	Name       string     `json:"name"`
	IP         string     `json:"ip"`
	IP6        string     `json:"ip6"` // IPv6 overlay address; empty for none
	PublicKey  string     `json:"public_key"`
	Tags       []string   `json:"tags"`
	Online     bool       `json:"online"`
	DNSName    string     `json:"dns_name"`
	Path       string     `json:"path"` // "direct", "relay" or "none"
	Endpoint   string     `json:"endpoint"`
	LocalType  string     `json:"local_type"`  // host, srflx, prflx, relay, portmap
	RemoteType string     `json:"remote_type"` // host, srflx, prflx, relay, portmap
	Family     string     `json:"family"`      // ipv4 or ipv6: the path's (the relay server's on a relay path)
	Reason     string     `json:"reason"`
	Relay      *RelayPath `json:"relay"`
	// RelayICEState is "shared channel" on the shared relay client.
	RelayICEState string  `json:"relay_ice_state"`
	LastChange    string  `json:"last_change"`
	ChangedAt     string  `json:"changed_at"` // RFC 3339, whole seconds
	DirectAfterMs int64   `json:"direct_after_ms"`
	Punch         string  `json:"punch"` // a birthday punch under way
	LastHandshake string  `json:"last_handshake"`
	LastRx        string  `json:"last_rx"` // RFC 3339: last WireGuard packet from the peer
	RxBytes       uint64  `json:"rx_bytes"`
	TxBytes       uint64  `json:"tx_bytes"`
	RTTms         float64 `json:"rtt_ms"`
	// Policy is what this node may open to the peer under the access
	// policy ("blocked by policy" for nothing); empty with no policy.
	Policy         string `json:"policy"`
	PingBlocked    bool   `json:"ping_blocked"`
	PolicyDropsIn  uint64 `json:"policy_drops_in"`
	PolicyDropsOut uint64 `json:"policy_drops_out"`
}

// Peer returns the peer called name, or nil.
func (s *Status) Peer(name string) *PeerStatus {
	for i := range s.Peers {
		if s.Peers[i].Name == name {
			return &s.Peers[i]
		}
	}
	return nil
}

// OnlinePeers counts the peers marked online.
func (s *Status) OnlinePeers() int {
	n := 0
	for _, p := range s.Peers {
		if p.Online {
			n++
		}
	}
	return n
}

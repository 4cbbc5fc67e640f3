package agent

import (
	"sort"
	"time"

	"github.com/pion/ice/v4"
)

// Paths a peer's packets can take.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathNone   = "none"
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
	ID         uint64   `json:"id"`
	Name       string   `json:"name"`
	IP         string   `json:"ip"`
	PublicKey  string   `json:"public_key"`
	Tags       []string `json:"tags"`
	ListenPort int      `json:"listen_port"`
	TUN        string   `json:"tun"`
	// Endpoints are the addresses peers can reach this node at, as its ICE
	// sessions gathered them (host and server-reflexive).
	Endpoints []EndpointStatus `json:"endpoints"`
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
	ID        uint64   `json:"id"`
	Name      string   `json:"name"`
	IP        string   `json:"ip"`
	PublicKey string   `json:"public_key"`
	Tags      []string `json:"tags"`
	Online    bool     `json:"online"`
	// Path is "direct", "relay" or "none"; Reason says why when not direct.
	Path       string `json:"path"`
	Reason     string `json:"reason,omitempty"`
	Endpoint   string `json:"endpoint,omitempty"`
	LocalType  string `json:"local_type,omitempty"`
	RemoteType string `json:"remote_type,omitempty"`
	ICEState   string `json:"ice_state"`
	// LastHandshake is empty before the first WireGuard handshake.
	LastHandshake string  `json:"last_handshake"`
	RxBytes       uint64  `json:"rx_bytes"`
	TxBytes       uint64  `json:"tx_bytes"`
	RTTMs         float64 `json:"rtt_ms"`
}

// status reports the peer; wg holds WireGuard's counters for its key.
func (p *peer) status(wg wgPeerStats, haveWG bool) PeerStatus {
	p.mu.Lock()
	st := PeerStatus{
		ID:         p.id,
		Name:       p.node.Name,
		IP:         p.node.IP,
		PublicKey:  p.key.String(),
		Tags:       nonNil(p.node.Tags),
		Online:     p.node.Online,
		LocalType:  p.localType,
		RemoteType: p.remoteType,
		ICEState:   "none",
	}
	agent := p.ice
	state := p.state
	if agent != nil {
		st.ICEState = state.String()
	}
	if p.endpoint.IsValid() {
		st.Endpoint = p.endpoint.String()
	}
	hasPath := p.endpoint.IsValid()
	controlling := p.controlling
	answered := p.answered
	p.mu.Unlock()

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
	recentHandshake := haveWG && time.Since(wg.LastHandshake) < 3*time.Minute
	switch {
	case hasPath && (state == ice.ConnectionStateConnected || state == ice.ConnectionStateCompleted || recentHandshake):
		st.Path = PathDirect
		if st.LocalType == "relay" || st.RemoteType == "relay" {
			st.Path = PathRelay
		}
	default:
		st.Path = PathNone
		st.Reason = noPathReason(st.Online, agent != nil, state, controlling, answered)
	}
	return st
}

// noPathReason puts the session state in a short phrase for `status`.
func noPathReason(online, haveSession bool, state ice.ConnectionState, controlling, answered bool) string {
	switch {
	case !online:
		return "peer offline"
	case !haveSession && controlling:
		return "starting a session"
	case !haveSession:
		return "waiting for the peer's offer"
	case controlling && !answered:
		return "offer sent, waiting for the peer's answer"
	case state == ice.ConnectionStateFailed:
		return "no candidate pair worked: these NATs allow no direct path (needs a relay)"
	case state == ice.ConnectionStateDisconnected:
		return "path lost, checking candidates again"
	default:
		return "checking candidate pairs"
	}
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

// Package control defines the messages exchanged between the agent and the
// coordinator. Both sides import it, so every message is defined once.
//
// The control plane is plain HTTP(S) with JSON bodies:
//
//	GET  /api/v1/challenge  -> Challenge (for proof of key possession)
//	POST /api/v1/register   RegisterRequest -> RegisterResponse
//	GET  /api/v1/stream     WebSocket; Authorization: Bearer <credential>
//
// On the stream the coordinator sends a full Netmap first, then Deltas, and
// forwards Signals between agents. The agent sends Signals addressed to peers.
package control

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"time"

	"github.com/meshvpn/meshvpn/policy"
)

// ProtocolVersion is the stream protocol version spoken by this build. The
// agent sends it as the "v" query parameter of the stream URL (none means 1);
// the coordinator speaks min(agent's, its own) and says which in the netmap's
// "v" field.
//
// The rule that keeps old agents working: a coordinator never sends a
// version-N agent anything version N did not define. Adding an optional JSON
// field that old agents may ignore needs no new version; changing what a
// message means does, and the coordinator then keeps the old behaviour for
// streams of the older version.
//
//   - 1: a netmap, then deltas; a delta never names the receiving node.
//   - 2: deltas are batched (many nodes per delta, sent at most once per
//     batch window) and may name the receiving node itself, whose entry the
//     agent applies to its own view (name, address). Version 1 streams get the
//     same batches with their own node left out.
const ProtocolVersion = 2

// Paths of the HTTP API.
const (
	PathRegister = "/api/v1/register"
	PathStream   = "/api/v1/stream"
)

// HeaderPublicKey carries the agent's WireGuard public key on the stream
// request, so the coordinator can refuse a credential used with another key.
const HeaderPublicKey = "Meshvpn-Public-Key"

// OverlayPrefix is the range overlay addresses are drawn from (RFC 6598 shared
// address space, as CGNAT-style meshes commonly use).
var OverlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

// MaxRequestBody bounds every JSON request body the coordinator reads.
const MaxRequestBody = 64 << 10

// ParseCoordinatorURL checks the coordinator's base URL: http or https,
// with a host.
func ParseCoordinatorURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("coordinator URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("coordinator URL %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("coordinator URL %q: no host", s)
	}
	return u, nil
}

// RegisterRequest asks the coordinator to admit a node. A node that holds a
// credential from an earlier registration sends it instead of an auth key; it
// keeps its ID and overlay address.
type RegisterRequest struct {
	AuthKey    string `json:"auth_key,omitempty"`
	Credential string `json:"credential,omitempty"`
	Hostname   string `json:"hostname"`
	// PublicKey is the node's WireGuard public key, base64 (44 characters).
	PublicKey string `json:"public_key"`
	// Challenge and Proof prove that the sender holds PublicKey's private
	// key (see RegisterProof). A coordinator re-admits a public key it
	// already knows by auth key only with them.
	Challenge string `json:"challenge,omitempty"`
	Proof     string `json:"proof,omitempty"`
}

// Validate checks the fields a coordinator must not trust blindly.
func (r *RegisterRequest) Validate() error {
	if r.AuthKey == "" && r.Credential == "" {
		return errors.New("auth_key or credential is required")
	}
	if len(r.Hostname) > 63 {
		return errors.New("hostname longer than 63 characters")
	}
	if err := ValidatePublicKey(r.PublicKey); err != nil {
		return err
	}
	if len(r.Challenge) > 128 || len(r.Proof) > 64 {
		return errors.New("challenge or proof too long")
	}
	if (r.Challenge == "") != (r.Proof == "") {
		return errors.New("challenge and proof go together")
	}
	return nil
}

// ValidatePublicKey checks a base64 WireGuard public key. The encoding must
// be canonical: the last character carries two padding bits that lenient
// decoders ignore, so four spellings would name one key, and a coordinator
// that compares keys as strings would take an alias for a new key.
func ValidatePublicKey(s string) error {
	if len(s) != 44 || s[43] != '=' {
		return fmt.Errorf("public_key: want 44 base64 characters, got %d", len(s))
	}
	// Strict decoding still skips \r and \n: the length check catches them.
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err != nil || len(b) != 32 {
		return errors.New("public_key: not canonical base64 of 32 bytes")
	}
	return nil
}

// RegisterResponse admits a node.
type RegisterResponse struct {
	NodeID uint64 `json:"node_id"`
	Name   string `json:"name"`
	// IP is the node's overlay address, stable for the node.
	IP string `json:"ip"`
	// Prefix is the overlay prefix to route into the TUN device.
	Prefix string `json:"prefix"`
	// IP6 is the node's IPv6 overlay address in Prefix6, the mesh's ULA
	// /48 (see OverlayAddr6); both absent from older coordinators.
	IP6     string `json:"ip6,omitempty"`
	Prefix6 string `json:"prefix6,omitempty"`
	// Credential authenticates the node from now on; the agent stores it
	// (mode 0600) and never logs it.
	Credential string `json:"credential"`
}

// Error is the JSON body of every non-2xx API answer.
type Error struct {
	Error string `json:"error"`
}

// Node is one member of the mesh as its peers see it.
type Node struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// IP6 is the node's IPv6 overlay address in the mesh's ULA /48;
	// absent from older coordinators. Older agents ignore it.
	IP6       string    `json:"ip6,omitempty"`
	PublicKey string    `json:"public_key"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// Tags come from the auth key the node joined with; peers see them.
	Tags []string `json:"tags,omitempty"`
	// SeenFrom is the address the coordinator sees the node's stream come
	// from (its public address, unless a proxy sits in front of the
	// coordinator); empty before its first stream. Peers hold what the
	// node itself claims (its candidates) against it where a claim aims
	// traffic, as birthday probes do.
	SeenFrom string `json:"seen_from,omitempty"`
}

// Netmap is the full view of the mesh for one node.
type Netmap struct {
	Self  Node   `json:"self"`
	Peers []Node `json:"peers"`
	// STUN lists host:port STUN servers the agent should use.
	STUN []string `json:"stun"`
	// STUNServers repeats STUN with each server's alternate address, for
	// NAT tests (see NetcheckInfo); older agents read only STUN.
	STUNServers []STUNServer `json:"stun_servers,omitempty"`
	// STUN6 lists host:port IPv6 STUN servers, kept apart from STUN so
	// that agents that only speak IPv4 ignore them (see NetcheckInfo).
	STUN6 []string `json:"stun6,omitempty"`
	// Relays lists the TURN servers the agent may relay through, with
	// credentials minted for this node. Absent from older coordinators.
	Relays []Relay `json:"relays,omitempty"`
	// DNS is the mesh's naming: peers are NAME.DNS.Domain. Absent from
	// older coordinators (agents then use DefaultDNSDomain).
	DNS *DNSConfig `json:"dns,omitempty"`
	// Filter is this node's packet filter under the coordinator's access
	// policy; absent when no policy is set (everything is allowed). Peers
	// then holds only the nodes this one may talk to in either direction.
	Filter *policy.Filter `json:"filter,omitempty"`
}

// Relay is one TURN server and the short-lived credential for it, in the
// TURN REST API scheme (username "expiry:node", password an HMAC of it).
type Relay struct {
	// URL is a turn: or turns: URI, e.g. "turn:relay.example.com:3478?transport=udp".
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
	// Expires is when the credential stops working; the coordinator sends
	// fresh ones well before.
	Expires time.Time `json:"expires,omitzero"`
	// CA is an optional PEM bundle that a turns: server's certificate chains
	// to, for servers with a private CA.
	CA string `json:"ca,omitempty"`
	// Node is the member that runs this relay (a peer relay, see
	// RelayOffer); 0 for the coordinator's and external servers.
	Node uint64 `json:"node,omitempty"`
}

// Delta changes a Netmap: nodes added or changed, nodes gone.
type Delta struct {
	Upsert []Node    `json:"upsert,omitempty"`
	Remove []uint64  `json:"remove,omitempty"`
	STUN   *[]string `json:"stun,omitempty"`
	// Relays, when present, replaces the whole relay list (fresh credentials).
	Relays *[]Relay `json:"relays,omitempty"`
	// Filter, when present, replaces the node's packet filter; one with
	// AllowAll set means the policy was lifted.
	Filter *policy.Filter `json:"filter,omitempty"`
}

// Signal kinds.
const (
	// SignalOffer carries the controlling side's ICE credentials for a new session.
	SignalOffer = "offer"
	// SignalAnswer carries the controlled side's ICE credentials for that session.
	SignalAnswer = "answer"
	// SignalCandidate carries one trickled ICE candidate of a session.
	SignalCandidate = "candidate"
	// SignalRestart asks the controlling side to start a new session.
	SignalRestart = "restart"
	// SignalInfo carries only NAT: the sender learnt something new about
	// its network. Agents that do not know it ignore it.
	SignalInfo = "info"
	// SignalOpened tells the peer, in the session named, that the sender's
	// first connectivity checks have left: a peer that holds back its own
	// (see the agent's punch order) starts now. Agents that do not know it
	// ignore it and start after a short wait.
	SignalOpened = "opened"
	// SignalMapping carries, in Candidate, the public "ip:port" that the
	// sender's new flows leave from right now (which a NAT may have moved
	// away from its STUN-seen port): a peer that opens its NAT with
	// low-TTL packets aims there too.
	SignalMapping = "mapping"
	// Birthday punching (between a symmetric NAT and a port-restricted
	// one; only between agents that both set Signal.Birthday):
	// SignalBirthdayAsk: the easy side asks the symmetric side to open
	// its sockets; Session is the attempt's token (16 hex digits),
	// Candidate the "ip:port" its probes will leave from ("" for its
	// server-reflexive candidate).
	SignalBirthdayAsk = "bday-ask"
	// SignalBirthdayReady: the symmetric side's sockets have sent their
	// opening packets; the easy side starts probing.
	SignalBirthdayReady = "bday-ready"
	// Synchronized simultaneous open (between two agents that both set
	// Signal.SyncOpen; Session names the direct session). The controlling
	// side measures the clock offset with pings (At: its clock, unix ns),
	// each answered by a pong (Echo: the ping's At, At: the answerer's
	// clock); then it sends a fire (At: the instant, in the receiver's
	// clock, when both send their opening packets; 0: no open this
	// session, check at once). After the open each
	// side sends a done (At: how long after its own first opening packet
	// the peer's arrived, in ns; 0 when none came), from which both work
	// out the skew between the two sends.
	SignalSyncPing = "sync-ping"
	SignalSyncPong = "sync-pong"
	SignalSyncFire = "sync-fire"
	SignalSyncDone = "sync-done"
)

// Signal is ICE signalling between two agents, relayed by the coordinator.
// The coordinator fills From; it forwards only between nodes of one mesh.
type Signal struct {
	From      uint64 `json:"from"`
	To        uint64 `json:"to"`
	Kind      string `json:"kind"`
	Session   string `json:"session"`
	Ufrag     string `json:"ufrag,omitempty"`
	Pwd       string `json:"pwd,omitempty"`
	Candidate string `json:"candidate,omitempty"`
	// Lane names which of the two per-peer sessions the signal belongs to:
	// "" for the direct one (all a version-1 agent knows), "relay" for the
	// relay-only one.
	Lane string `json:"lane,omitempty"`
	// NAT is what the sender found about its own network ("symmetric",
	// "udp-blocked" or empty), sent with offers and answers so both sides
	// can tell the user why a path is not direct.
	NAT string `json:"nat,omitempty"`
	// Filtering is what the sender's NAT lets in, as netcheck measures it
	// ("endpoint-independent", "address-dependent" or
	// "address-and-port-dependent"; empty when not measured), sent with
	// NAT. Both sides decide from it who sends first.
	Filtering string `json:"filtering,omitempty"`
	// OpenTTL is the TTL at which the sender's packets have passed all its
	// NATs and die at the next router (0: none found): a sender that has
	// one can open its NAT toward the peer without reaching the peer's
	// router.
	OpenTTL int `json:"open_ttl,omitempty"`
	// Birthday: the sender takes part in birthday punching (sent with
	// NAT). Agents that do not set it are never asked.
	Birthday bool `json:"birthday,omitempty"`
	// SyncOpen: the sender takes part in synchronized opens (sent with
	// NAT). Agents that do not set it are never sent a fire time.
	SyncOpen bool `json:"sync_open,omitempty"`
	// Ask (with SignalInfo): the sender forgot our NAT views (we came
	// online again, perhaps as a new run) and asks for them. Agents that
	// do not know it ignore it.
	Ask bool `json:"ask,omitempty"`
	// At and Echo carry the times of the synchronized open's signals
	// (see SignalSyncPing).
	At   int64 `json:"at,omitempty"`
	Echo int64 `json:"echo,omitempty"`
}

// LaneRelay is Signal.Lane of the relay-only ICE session.
const LaneRelay = "relay"

// Close codes (WebSocket application range) and reasons the coordinator
// ends a stream with when an operator took the node out of the mesh. The
// agent drops its peers on them: reconnecting with the same credential will
// be refused.
const (
	CloseNodeRemoved = 4001
	CloseNodeExpired = 4002

	ReasonNodeRemoved = "node removed"
	ReasonNodeExpired = "node expired"
)

// Message types on the stream.
const (
	MsgNetmap = "netmap"
	MsgDelta  = "delta"
	MsgSignal = "signal"
	MsgError  = "error"
	// MsgResume answers a reconnecting agent that named a netmap version
	// the coordinator can still bring up to date (see QuerySince): Netmap
	// carries Self and the server fields with no Peers, Delta the peers
	// changed or removed since that version. The agent keeps its other
	// peers. Only agents that send QuerySince get one.
	MsgResume = "resume"
)

// QuerySince is the stream URL's query parameter naming the netmap version
// (Message.NetmapVersion) a reconnecting agent holds.
const QuerySince = "since"

// Message is one frame on the stream, in either direction.
type Message struct {
	Type    string  `json:"type"`
	Version int     `json:"v,omitempty"`
	Netmap  *Netmap `json:"netmap,omitempty"`
	Delta   *Delta  `json:"delta,omitempty"`
	Signal  *Signal `json:"signal,omitempty"`
	Error   string  `json:"error,omitempty"`
	// NetmapVersion names the netmap state a netmap, delta or resume brings
	// the agent to; opaque to the agent. Absent from older coordinators.
	NetmapVersion string `json:"nv,omitempty"`
}

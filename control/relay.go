package control

// PathRelayOffer is where a node running a peer relay (meshvpn up
// --relay-server) offers it to the mesh and reports what it relayed:
// POST a RelayOffer with the node's bearer credential, get a
// RelayOfferResponse. The node posts again every RelayOfferResponse.Every
// seconds; an offer not renewed for three times that is withdrawn.
const PathRelayOffer = "/api/v1/relay"

// RelayOffer is a peer relay's offer and usage report.
type RelayOffer struct {
	// Addr is IPv4:port where other nodes reach the relay over UDP and TCP
	// (--relay-public). The coordinator lists it only when its IP is the
	// one the request comes from, and is not a private address.
	Addr string `json:"addr"`
	// Usage is what the relay relayed per node since its last report.
	Usage []RelayUsage `json:"usage,omitempty"`
}

// MaxRelayUsageRows bounds a report: the nodes that relayed since the
// last one (a relay reports every half minute).
const MaxRelayUsageRows = 10_000

// RelayUsage is what a relay relayed for one node: In from its peers to
// it, Out from it to its peers (relayed UDP payloads, no TURN framing).
type RelayUsage struct {
	Node       uint64 `json:"node"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsIn  uint64 `json:"packets_in"`
	BytesOut   uint64 `json:"bytes_out"`
	PacketsOut uint64 `json:"packets_out"`
}

// RelayOfferResponse answers a RelayOffer.
type RelayOfferResponse struct {
	// Secret is this relay's own secret: it verifies the credentials
	// the coordinator mints for other nodes to use this relay, and for no
	// other relay.
	Secret string `json:"secret"`
	// Listed says whether other nodes are told about the relay; Reason
	// says why not.
	Listed bool   `json:"listed"`
	Reason string `json:"reason,omitempty"`
	// Every is how often, in seconds, to post again.
	Every int `json:"every"`
}

package control

// PathNetcheckInfo is the unauthenticated GET endpoint that tells
// `meshvpn netcheck` which servers to measure against. It reveals nothing an
// agent could not learn by registering: only the public server addresses.
const PathNetcheckInfo = "/api/v1/netcheck-info"

// NetcheckInfo is the answer of GET /api/v1/netcheck-info.
type NetcheckInfo struct {
	STUN []STUNServer `json:"stun"`
	// TURN lists host:port TURN servers; netcheck measures the latency to
	// each with a STUN Binding request. Empty while the coordinator serves
	// no TURN.
	TURN []string `json:"turn,omitempty"`
	// STUN6 lists the coordinator's IPv6 STUN servers (no alternates),
	// apart from STUN so that clients that only speak IPv4 never see them.
	// Empty unless the coordinator was given a public IPv6 address.
	STUN6 []STUNServer `json:"stun6,omitempty"`
}

// STUNServer is one STUN server. Alternate is the second address of the same
// server (another IP, another port, or both), empty if it has none. A server
// with an alternate answers RFC 5780 CHANGE-REQUEST: it can reply from the
// other IP and/or port, which is how netcheck tests a NAT's filtering, and
// asking both addresses from one socket shows whether the NAT's mapping
// depends on the destination.
type STUNServer struct {
	Addr      string `json:"addr"`
	Alternate string `json:"alternate,omitempty"`
}

// Flags of the STUN CHANGE-REQUEST attribute (RFC 5780 section 7.2): the
// last byte of its 4-byte value.
const (
	STUNChangeIP   = 0x04
	STUNChangePort = 0x02
)

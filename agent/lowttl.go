package agent

import "net/netip"

// Low-TTL opening packets leave from the shared socket (datapath/lowttl.go
// says why and how); what they carry is the agent's.

// openingPayload is what an opening packet carries: neither WireGuard nor
// STUN, so a peer that gets it anyway drops it (classify).
var openingPayload = []byte("mvop")

// sendTTL sends one opening packet with the given TTL from the shared
// socket to an IPv4 address.
func (b *Bind) sendTTL(to netip.AddrPort, ttl int) error {
	return b.SendOpening(to, ttl, openingPayload)
}

// sendOpening sends payload with the given TTL from the shared socket to
// an IPv4 address.
func (b *Bind) sendOpening(to netip.AddrPort, ttl int, payload []byte) error {
	return b.SendOpening(to, ttl, payload)
}

package agent

import (
	"net/netip"
	"sync"
)

// Birthday packets: "mvb", a type byte, and the attempt's 8-byte token.
// The first byte keeps them apart from WireGuard (1..4) and STUN (top two
// bits zero), so classify tells them apart with a fixed-size compare.
const (
	bdayPacketLen = 12
	bdayProbeType = 'p' // easy side -> a symmetric side's port
	bdayReplyType = 'r' // the socket that got a probe -> the easy side
)

type bdayToken [8]byte

// bdayPacket builds a probe or a reply.
func bdayPacket(typ byte, tok bdayToken) []byte {
	p := make([]byte, bdayPacketLen)
	copy(p, "mvb")
	p[3] = typ
	copy(p[4:], tok[:])
	return p
}

// parseBdayPacket reads a birthday packet; ok is false for anything else.
func parseBdayPacket(b []byte) (typ byte, tok bdayToken, ok bool) {
	if len(b) != bdayPacketLen || b[0] != 'm' || b[1] != 'v' || b[2] != 'b' {
		return 0, tok, false
	}
	if b[3] != bdayProbeType && b[3] != bdayReplyType {
		return 0, tok, false
	}
	copy(tok[:], b[4:])
	return b[3], tok, true
}

// bdayReplies hands the replies that reach the shared socket to the
// attempt waiting for them, by token. Unknown tokens are dropped.
type bdayReplies struct {
	mu      sync.Mutex
	waiting map[bdayToken]chan netip.AddrPort
}

// expect registers tok; the channel gets the first reply's source.
func (r *bdayReplies) expect(tok bdayToken) chan netip.AddrPort {
	ch := make(chan netip.AddrPort, 1)
	r.mu.Lock()
	if r.waiting == nil {
		r.waiting = map[bdayToken]chan netip.AddrPort{}
	}
	r.waiting[tok] = ch
	r.mu.Unlock()
	return ch
}

// forget drops tok's registration if ch is still the one: a birthday
// path's heartbeat (birthdayheart.go) takes over the token of the probe
// that found it.
func (r *bdayReplies) forget(tok bdayToken, ch chan netip.AddrPort) {
	r.mu.Lock()
	if r.waiting[tok] == ch {
		delete(r.waiting, tok)
	}
	r.mu.Unlock()
}

// deliver takes one birthday packet from the shared socket.
func (r *bdayReplies) deliver(p []byte, from netip.AddrPort) {
	typ, tok, ok := parseBdayPacket(p)
	if !ok || typ != bdayReplyType {
		return
	}
	r.mu.Lock()
	ch := r.waiting[tok]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- from:
		default:
		}
	}
}

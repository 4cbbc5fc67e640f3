package agent

import (
	"net/netip"
	"sync"
	"time"
)

// A synchronized open's opening packet: "mvs", 'o', and the session's
// 8-byte token. Like a birthday packet it is neither WireGuard nor STUN
// (classify), and an agent that does not know it drops it.
const (
	syncPacketLen = 12
	syncOpenType  = 'o'
)

func syncPacket(tok bdayToken) []byte {
	p := make([]byte, syncPacketLen)
	copy(p, "mvs")
	p[3] = syncOpenType
	copy(p[4:], tok[:])
	return p
}

// parseSyncPacket reads an opening packet's token; ok is false for
// anything else.
func parseSyncPacket(b []byte) (tok bdayToken, ok bool) {
	if len(b) != syncPacketLen || b[0] != 'm' || b[1] != 'v' || b[2] != 's' || b[3] != syncOpenType {
		return tok, false
	}
	copy(tok[:], b[4:])
	return tok, true
}

// syncArrivals notes when the first opening packet of an open we wait for
// reached the shared socket. Unknown tokens are dropped, so the map holds
// only our own opens under way.
type syncArrivals struct {
	mu      sync.Mutex
	waiting map[bdayToken]*syncArrival
}

type syncArrival struct {
	at   time.Time
	from netip.AddrPort
}

func (r *syncArrivals) expect(tok bdayToken) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting == nil {
		r.waiting = map[bdayToken]*syncArrival{}
	}
	r.waiting[tok] = &syncArrival{}
}

func (r *syncArrivals) forget(tok bdayToken) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.waiting, tok)
}

// arrival is when the first opening packet of tok came, and from where.
func (r *syncArrivals) arrival(tok bdayToken) (time.Time, netip.AddrPort, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.waiting[tok]
	if w == nil || w.at.IsZero() {
		return time.Time{}, netip.AddrPort{}, false
	}
	return w.at, w.from, true
}

// deliver takes one opening packet from the shared socket.
func (r *syncArrivals) deliver(p []byte, from netip.AddrPort) {
	now := time.Now()
	tok, ok := parseSyncPacket(p)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.waiting[tok]; w != nil && w.at.IsZero() {
		w.at, w.from = now, from
	}
}

package relay

import (
	"net"
	"net/netip"
	"time"

	"github.com/meshvpn/meshvpn/internal/ratelimit"
)

// SourceLimiter is a token bucket per source address for answers a
// stranger can ask for without credentials (STUN Binding responses, TURN
// challenges). Such an answer is larger than the request, so with a spoofed
// source it is a reflection: the limit bounds what one victim can be sent.
// Sources are keyed as every per-address limit is (ratelimit.SourceKey:
// IPv6 by /64), and memory is bounded by maxSources buckets.
type SourceLimiter struct{ keyed *ratelimit.Keyed }

// Defaults for unauthenticated STUN/TURN answers. An agent sends one or two
// Binding requests (plus retransmissions) per ICE gathering, that is per
// peer, and netcheck a few dozen: 40 agents behind one NAT address meeting
// their 39 peers at once send about 3,000, which 1,000 at once and 200/s
// answer within 10 s. A victim of reflection gets at most 200 answers of
// about 64 bytes a second (100 kbit/s) from us, whoever asks.
const (
	AnswerBurst  = 1000
	AnswerPerSec = 200
	maxSources   = 65536
)

func NewSourceLimiter(burst int, perSecond float64) *SourceLimiter {
	return &SourceLimiter{keyed: ratelimit.NewKeyed(ratelimit.Rate{Burst: float64(burst), PerSec: perSecond}, maxSources)}
}

// AllowAddr takes a token for the source of a datagram; addresses that are
// not UDP/IP are refused.
func (l *SourceLimiter) AllowAddr(from net.Addr, now time.Time) bool {
	u, ok := from.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false
	}
	return l.allow(a, now)
}

// allow takes a token from a's bucket, and says whether there was one.
func (l *SourceLimiter) allow(a netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	ok, _ := l.keyed.Reserve(ratelimit.SourceKey(a.String()), now)
	return ok
}

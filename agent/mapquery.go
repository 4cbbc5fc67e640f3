package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
)

// The mapping a new flow of the shared socket gets now. Linux gives a new
// flow the mapping of its source's newest flow, and that moves away from
// the public port STUN saw whenever a stale entry on the router clashed
// with one of our flows. A peer that opens its NAT for us with low-TTL
// packets must aim at the port our checks will really come from, so the
// waiting side asks a STUN address it has not sent to lately.

// mapQueries are the STUN Binding requests in flight from the shared
// socket, by transaction ID; Bind.filter hands their answers here instead
// of to ICE.
type mapQueries struct {
	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]chan netip.AddrPort
}

// answer takes a STUN message off the shared socket if it answers one of
// our queries.
func (q *mapQueries) answer(p []byte) bool {
	q.mu.Lock()
	none := len(q.pending) == 0
	q.mu.Unlock()
	if none {
		return false
	}
	var m stun.Message
	m.Raw = append(m.Raw[:0], p...)
	if m.Decode() != nil || m.Type != stun.BindingSuccess {
		return false
	}
	q.mu.Lock()
	ch, ok := q.pending[m.TransactionID]
	delete(q.pending, m.TransactionID)
	q.mu.Unlock()
	if !ok {
		return false
	}
	var xa stun.XORMappedAddress
	if xa.GetFrom(&m) == nil {
		if ip, ok := netip.AddrFromSlice(xa.IP); ok {
			ch <- netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port))
		}
	}
	return true
}

// mapQueryTimeout bounds one query.
const mapQueryTimeout = 300 * time.Millisecond

// queryMapping asks dest for our mapped address from the shared socket.
func (b *Bind) queryMapping(dest netip.AddrPort) (netip.AddrPort, error) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	ch := make(chan netip.AddrPort, 1)
	q := &b.queries
	q.mu.Lock()
	if q.pending == nil {
		q.pending = map[[stun.TransactionIDSize]byte]chan netip.AddrPort{}
	}
	q.pending[req.TransactionID] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.pending, req.TransactionID)
		q.mu.Unlock()
	}()
	if err := b.SendTo(req.Raw, dest); err != nil {
		return netip.AddrPort{}, err
	}
	select {
	case m := <-ch:
		b.mappedMu.Lock()
		b.mapped, b.mappedAt = m, time.Now()
		b.mappedMu.Unlock()
		return m, nil
	case <-time.After(mapQueryTimeout):
		return netip.AddrPort{}, errors.New("no STUN answer")
	}
}

// lastMapping is the last mapping a query saw and when.
func (b *Bind) lastMapping() (netip.AddrPort, time.Time) {
	b.mappedMu.Lock()
	defer b.mappedMu.Unlock()
	return b.mapped, b.mappedAt
}

var errNoFreshSTUN = errors.New("no STUN address free to ask")

// newFlowMapping is where the shared socket's new flows leave from now,
// and when that was seen: a query to a fresh STUN address.
func (a *Agent) newFlowMapping() (netip.AddrPort, time.Time, error) {
	dest, ok := a.freshSTUN()
	if !ok {
		return netip.AddrPort{}, time.Time{}, errNoFreshSTUN
	}
	m, err := a.bind.queryMapping(dest)
	if err != nil {
		return netip.AddrPort{}, time.Time{}, fmt.Errorf("mapping query to %s: %w", dest, err)
	}
	return m, time.Now(), nil
}

// freshSTUN picks a STUN address the shared socket has not sent to for
// longer than a conntrack entry lives (staleExpiry): the other
// address/port combinations of an RFC 5780 server (ICE gathers from the
// primary only). ok is false when none is free.
func (a *Agent) freshSTUN() (netip.AddrPort, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for _, c := range a.freshCandidatesLocked() {
		if now.Sub(a.stunUsed[c]) > staleExpiry {
			if a.stunUsed == nil {
				a.stunUsed = map[netip.AddrPort]time.Time{}
			}
			a.stunUsed[c] = now
			return c, true
		}
	}
	return netip.AddrPort{}, false
}

// stunFreeAt is when freshSTUN has an address again (now or earlier when
// one is free); ok is false when no server has an alternate address, so
// none ever will.
func (a *Agent) stunFreeAt() (at time.Time, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.freshCandidatesLocked() {
		if t := a.stunUsed[c].Add(staleExpiry); !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	return at, ok
}

// freshCandidatesLocked lists the STUN addresses freshSTUN may pick.
func (a *Agent) freshCandidatesLocked() []netip.AddrPort {
	var out []netip.AddrPort
	for _, srv := range a.stunServers {
		if srv.Alternate == "" {
			continue
		}
		p, err1 := net.ResolveUDPAddr("udp4", srv.Addr)
		q, err2 := net.ResolveUDPAddr("udp4", srv.Alternate)
		if err1 != nil || err2 != nil {
			continue
		}
		pa, qa := p.AddrPort(), q.AddrPort()
		out = append(out,
			netip.AddrPortFrom(qa.Addr().Unmap(), qa.Port()),
			netip.AddrPortFrom(qa.Addr().Unmap(), pa.Port()),
			netip.AddrPortFrom(pa.Addr().Unmap(), qa.Port()))
	}
	return out
}

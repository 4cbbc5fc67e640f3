package filter

import (
	"net/netip"
	"time"
)

// Idle timeouts of tracked connections, close to Linux conntrack's spirit
// but shorter: an entry only lets replies through, and the peer's next
// packet after expiry is judged by the rules again.
const (
	tcpTimeout      = 10 * time.Minute
	tcpCloseTimeout = 10 * time.Second // after FIN or RST
	udpTimeout      = 2 * time.Minute
	icmpTimeout     = 30 * time.Second
	otherTimeout    = time.Minute
)

// DefaultMaxConns bounds the connection table. When it is full, expired
// entries are swept; if none are, an arbitrary entry is evicted (its
// connection then needs the rules again), so a peer cannot grow it.
const DefaultMaxConns = 65536

// connKey names a connection from this node's side: the peer's address,
// this node's port and the peer's port.
type connKey struct {
	proto    uint8
	peer     netip.Addr
	local    uint16
	peerPort uint16
}

type conntrack struct {
	max   int
	conns map[connKey]int64 // expiry, unix nanoseconds
	// lastSweep keeps a full table from being swept for every new flow.
	lastSweep int64
}

func newConntrack(max int) *conntrack {
	return &conntrack{max: max, conns: map[connKey]int64{}}
}

func timeout(p *packet) time.Duration {
	switch p.proto {
	case protoTCP:
		if p.tcpFlags&(tcpFIN|tcpRST) != 0 {
			return tcpCloseTimeout
		}
		return tcpTimeout
	case protoUDP:
		return udpTimeout
	case protoICMP:
		return icmpTimeout
	}
	return otherTimeout
}

// seen refreshes k if it is tracked and alive.
func (c *conntrack) seen(k connKey, p *packet, now int64) bool {
	exp, ok := c.conns[k]
	if !ok {
		return false
	}
	if exp < now {
		delete(c.conns, k)
		return false
	}
	c.conns[k] = now + int64(timeout(p))
	return true
}

// alive tells whether k is tracked, without refreshing it (for ICMP
// errors about a connection).
func (c *conntrack) alive(k connKey, now int64) bool {
	exp, ok := c.conns[k]
	return ok && exp >= now
}

// track starts (or refreshes) k.
func (c *conntrack) track(k connKey, p *packet, now int64) {
	if _, ok := c.conns[k]; !ok && len(c.conns) >= c.max {
		if now-c.lastSweep > int64(time.Second) {
			c.lastSweep = now
			c.sweep(now)
		}
		if len(c.conns) >= c.max {
			for old := range c.conns { // arbitrary: map order
				delete(c.conns, old)
				break
			}
		}
	}
	c.conns[k] = now + int64(timeout(p))
}

// sweep drops expired entries.
func (c *conntrack) sweep(now int64) {
	for k, exp := range c.conns {
		if exp < now {
			delete(c.conns, k)
		}
	}
}

package agent

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// lazyTUN sits between WireGuard and the (policy-filtered) TUN device of a
// lazy agent. An outbound packet to a peer whose path is not ready yet is
// copied into the peer's queue, dropped from WireGuard's batch (size 0:
// wireguard-go skips it, and would otherwise drop it for want of a peer)
// and the peer is woken. Once the path is up and WireGuard has handshaked
// (readywatch.go) the queue is handed to WireGuard by the next Read; a
// datagram of ours into the TUN (wakePort → the overlay prefix's network
// address, port 9; no peer has that address, so a policy filter does not
// count it against one, and it is dropped here) makes a Read that is
// blocked in the kernel return. Packets
// both ways mark the peer used, for the idle teardown and the direct
// path's consent checks (consent.go), lazy agent or eager; an eager
// agent's packets pass untouched.
type lazyTUN struct {
	wgtun.Device
	a *Agent

	// pending: out holds packets for WireGuard.
	pending atomic.Bool
	mu      sync.Mutex
	out     [][]byte

	wake     *net.UDPConn // nil when it could not be opened
	wakePort uint16
	wakeTo   netip.AddrPort
}

// Queue bounds: per peer, over all peers, and how long a packet may wait
// for its path (a TCP SYN is sent again after 1 s anyway; older packets
// are worth little).
const (
	lazyQueuePeer  = 64
	lazyQueueTotal = 1024
	lazyQueueTTL   = 10 * time.Second
)

// wakeDstPort is where the wake datagrams go: the discard port, and they
// never leave this host.
const wakeDstPort = 9

func newLazyTUN(a *Agent, dev wgtun.Device, overlay netip.Prefix) *lazyTUN {
	t := &lazyTUN{Device: dev, a: a, wakeTo: netip.AddrPortFrom(overlay.Masked().Addr(), wakeDstPort)}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		a.log.Warn("no wake socket: queued packets wait for the next packet to any peer", "err", err)
		return t
	}
	t.wake, t.wakePort = c, uint16(c.LocalAddr().(*net.UDPAddr).Port)
	return t
}

func (t *lazyTUN) Close() error {
	if t.wake != nil {
		t.wake.Close()
	}
	return t.Device.Close()
}

func (t *lazyTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if t.pending.Load() {
		if n := t.drain(bufs, sizes, offset); n > 0 {
			return n, nil
		}
	}
	n, err := t.Device.Read(bufs, sizes, offset)
	if n > 0 {
		t.outbound(bufs[:n], sizes[:n], offset)
	}
	return n, err
}

func (t *lazyTUN) Write(bufs [][]byte, offset int) (int, error) {
	if idx := t.a.ipIndex.Load(); idx != nil {
		var last netip.Addr
		for _, b := range bufs {
			src, ok := packetAddr(b[offset:], false)
			if !ok || src == last {
				continue
			}
			last = src
			if p := (*idx)[src]; p != nil {
				p.markUsed()
			}
		}
	}
	return t.Device.Write(bufs, offset)
}

// markUsed notes a packet to or from the peer through the TUN.
func (p *peer) markUsed() {
	if !p.used.Load() {
		p.used.Store(true)
	}
	p.consentUse() // consentrun.go
}

// outbound queues what must wait for a path and drops our wake datagrams.
func (t *lazyTUN) outbound(bufs [][]byte, sizes []int, offset int) {
	lazy := t.a.lazyActive.Load()
	idx := t.a.ipIndex.Load()
	var last netip.Addr
	var lp *peer
	for i := range bufs {
		if sizes[i] <= 0 {
			continue
		}
		pkt := bufs[i][offset : offset+sizes[i]]
		if t.isWake(pkt) {
			sizes[i] = 0
			continue
		}
		if idx == nil {
			continue
		}
		dst, ok := packetAddr(pkt, true)
		if !ok {
			continue
		}
		if dst != last {
			last, lp = dst, (*idx)[dst]
			if lp != nil {
				lp.markUsed() // once per run of packets to one peer
			}
		}
		p := lp
		if p == nil || !lazy || p.ready.Load() {
			continue
		}
		switch p.queue.push(pkt, &t.a.queued) {
		case queuePassing:
			continue
		case queueFull:
			sizes[i] = 0
		case queueQueued:
			sizes[i] = 0
		}
		p.wakeAsync("packet to the peer")
	}
}

// isWake tells our wake datagrams (UDP from wakePort to the discard port).
func (t *lazyTUN) isWake(pkt []byte) bool {
	if t.wakePort == 0 || len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[9] != 17 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		return false
	}
	return binary.BigEndian.Uint16(pkt[ihl:]) == t.wakePort && binary.BigEndian.Uint16(pkt[ihl+2:]) == wakeDstPort
}

// inject hands a peer's queued packets to WireGuard and makes the TUN
// reader return.
func (t *lazyTUN) inject(pkts [][]byte) {
	t.mu.Lock()
	t.out = append(t.out, pkts...)
	t.pending.Store(true)
	t.mu.Unlock()
	if t.wake != nil {
		_, _ = t.wake.WriteToUDPAddrPort(nil, t.wakeTo)
	}
}

// drain copies queued packets into WireGuard's read buffers.
func (t *lazyTUN) drain(bufs [][]byte, sizes []int, offset int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for len(t.out) > 0 && n < len(bufs) {
		pkt := t.out[0]
		t.out[0] = nil
		t.out = t.out[1:]
		if len(bufs[n])-offset < len(pkt) {
			continue
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
	}
	if len(t.out) == 0 {
		t.out = nil
		t.pending.Store(false)
	}
	return n
}

// packetAddr reads an IP packet's destination (dst) or source address.
func packetAddr(pkt []byte, dst bool) (netip.Addr, bool) {
	if len(pkt) < 1 {
		return netip.Addr{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, false
		}
		off := 12
		if dst {
			off = 16
		}
		return netip.AddrFrom4([4]byte(pkt[off : off+4])), true
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, false
		}
		off := 8
		if dst {
			off = 24
		}
		return netip.AddrFrom16([16]byte(pkt[off : off+16])), true
	}
	return netip.Addr{}, false
}

// pktQueue holds a peer's packets while its path is set up. Once the path
// is ready it passes everything (push says so) until the peer sleeps.
type pktQueue struct {
	mu      sync.Mutex
	pkts    [][]byte
	first   time.Time
	passing bool
	total   *atomic.Int64 // the agent's count over all queues
	dropped uint64
}

type pushResult int

const (
	queueQueued pushResult = iota
	queueFull
	queuePassing
)

func (q *pktQueue) push(pkt []byte, total *atomic.Int64) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.passing {
		return queuePassing
	}
	q.total = total
	if len(q.pkts) >= lazyQueuePeer || total.Load() >= lazyQueueTotal {
		q.dropped++
		return queueFull
	}
	if len(q.pkts) == 0 {
		q.first = time.Now()
	}
	q.pkts = append(q.pkts, append([]byte(nil), pkt...))
	total.Add(1)
	return queueQueued
}

// open takes the queued packets and lets later ones pass.
func (q *pktQueue) open() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.passing = true
	return q.takeLocked()
}

func (q *pktQueue) takeLocked() [][]byte {
	out := q.pkts
	q.pkts = nil
	if q.total != nil {
		q.total.Add(-int64(len(out)))
	}
	return out
}

// drop forgets the queue and holds packets again (the peer sleeps).
func (q *pktQueue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.passing = false
	q.takeLocked()
}

// expire drops packets that waited longer than lazyQueueTTL.
func (q *pktQueue) expire(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pkts) > 0 && now.Sub(q.first) > lazyQueueTTL {
		q.dropped += uint64(len(q.pkts))
		q.takeLocked()
	}
}

func (q *pktQueue) stats() (queued int, dropped uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pkts), q.dropped
}

package datapath

import (
	"net"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// Packets that come through a route of ours (a relay channel, a relay
// session, a birthday socket) reach WireGuard through one extra
// ReceiveFunc. They travel in batches: the shared relay client reads a
// recvmmsg batch straight into an inBatch's buffers and queues the whole
// batch, one channel send; WireGuard's receive copies the messages into
// the buffers it offers, up to its batch size per call. Single packets
// (relay sessions, birthday sockets) travel as batches of one.

// relayQueueLen bounds the packets waiting for WireGuard; beyond it
// packets are dropped, as a full socket buffer would.
const relayQueueLen = 1024

// inBatch is a batch of WireGuard messages: msgs lie in bufs.
type inBatch struct {
	bufs [][]byte
	msgs []inMsg
	// free takes the batch back once WireGuard has copied it; nil for a
	// pooled single.
	free chan *inBatch
}

type inMsg struct {
	p  []byte
	ep conn.Endpoint
}

// singlePool holds batches of one packet, for deliver.
var singlePool = sync.Pool{New: func() any { return &inBatch{bufs: [][]byte{nil}, msgs: make([]inMsg, 0, 1)} }}

// release gives b back to its reader or the pool.
func (b *inBatch) release() {
	clear(b.msgs) // drop the endpoints
	b.msgs = b.msgs[:0]
	if b.free == nil {
		singlePool.Put(b)
		return
	}
	select {
	case b.free <- b:
	default: // cannot happen: free has room for all the reader's batches
	}
}

// push queues b for WireGuard, or drops it when too much waits already.
func (r *relayPaths) push(b *inBatch) {
	n := int64(len(b.msgs))
	if r.queued.Add(n) > relayQueueLen {
		r.queued.Add(-n)
		b.release()
		return
	}
	select {
	case r.in <- b:
	default:
		r.queued.Add(-n)
		b.release()
	}
}

// deliver queues a copy of one WireGuard message, from ep as WireGuard
// sees it (roam.go).
func (r *relayPaths) deliver(p []byte, ep conn.Endpoint) {
	b := singlePool.Get().(*inBatch)
	if cap(b.bufs[0]) < len(p) {
		b.bufs[0] = make([]byte, max(len(p), 2048))
	}
	buf := b.bufs[0][:len(p)]
	copy(buf, p)
	b.msgs = append(b.msgs, inMsg{p: buf, ep: ep})
	r.push(b)
}

// receiveFunc is the extra conn.ReceiveFunc WireGuard polls for packets
// through our routes: it blocks for a batch, then fills WireGuard's
// buffers from it and whatever else is queued. A batch larger than what
// WireGuard offers is finished on the next call.
func (r *relayPaths) receiveFunc() conn.ReceiveFunc {
	r.mu.RLock()
	done := r.done
	r.mu.RUnlock()
	var cur *inBatch // wireguard-go calls a ReceiveFunc from one goroutine
	next := 0
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if cur == nil {
			select {
			case cur = <-r.in:
				next = 0
			case <-done:
				return 0, net.ErrClosed
			}
		}
		n := 0
		for {
			for next < len(cur.msgs) && n < len(packets) {
				m := &cur.msgs[next]
				sizes[n] = copy(packets[n], m.p)
				eps[n] = m.ep
				n++
				next++
			}
			if next < len(cur.msgs) {
				return n, nil // WireGuard's batch is full
			}
			r.queued.Add(-int64(len(cur.msgs)))
			cur.release()
			cur = nil
			if n == len(packets) {
				return n, nil
			}
			select {
			case cur = <-r.in:
				next = 0
			default:
				return n, nil
			}
		}
	}
}

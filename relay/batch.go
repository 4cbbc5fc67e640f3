package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Batched UDP I/O for the relay's data path: one recvmmsg or sendmmsg
// system call moves up to relayBatchLen datagrams, where pion's loops make
// one call per datagram. ipv4.PacketConn's batch calls carry any socket
// address, so they serve dual-stack sockets too.
const (
	relayBatchLen = 32
	// relayBufLen holds the largest datagram pion's relay loop reads
	// (its rtpMTU) plus the 4-byte ChannelData header.
	relayBufLen = 1604
)

// BatchReader hands out the datagrams of one socket one by one, reading
// them relayBatchLen at a time. Only one goroutine may use it.
type BatchReader struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	n    int // datagrams in msgs from the last read
	next int // the next one to hand out
}

func NewBatchReader(c *net.UDPConn) *BatchReader {
	r := &BatchReader{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, relayBatchLen)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, relayBufLen)}
	}
	return r
}

// read returns the next datagram and its source; the bytes stay valid
// until the next call. Before it blocks in the system call it calls idle
// (when not nil): the caller flushes what it queued from this batch, as its
// buffers are about to be overwritten.
func (r *BatchReader) Read(idle func()) ([]byte, net.Addr, error) {
	for {
		for r.next >= r.n {
			if idle != nil {
				idle()
			}
			n, err := r.pc.ReadBatch(r.msgs, 0)
			if err != nil {
				return nil, nil, err
			}
			r.n, r.next = n, 0
		}
		m := &r.msgs[r.next]
		r.next++
		// A datagram too long for a relay buffer is dropped, not cut.
		if m.Flags&unix.MSG_TRUNC == 0 {
			return m.Buffers[0][:m.N], m.Addr, nil
		}
	}
}

// batchWriter sends queued datagrams with as few system calls as it can.
// It is safe for concurrent use.
type batchWriter struct {
	mu sync.Mutex
	pc *ipv4.PacketConn
}

func newBatchWriter(c *net.UDPConn) *batchWriter { return &batchWriter{pc: ipv4.NewPacketConn(c)} }

// errBatchStalled is returned when the kernel takes no datagram of a batch
// several times in a row.
var errBatchStalled = errors.New("relay: socket takes no datagrams")

// write sends msgs in order. A datagram the kernel refuses (an unreachable
// peer, a full buffer) is dropped as a lost packet would be, and the rest
// still go; the first such error is returned.
func (w *batchWriter) write(msgs []ipv4.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first error
	stalls := 0
	for len(msgs) > 0 {
		n, err := w.pc.WriteBatch(msgs, 0)
		if n > 0 {
			msgs, stalls = msgs[n:], 0
			continue
		}
		if err == nil {
			if stalls++; stalls > 3 {
				return errBatchStalled
			}
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		if first == nil {
			first = fmt.Errorf("relay: send to %v: %w", msgs[0].Addr, err)
		}
		msgs = msgs[1:] // the head failed: skip it
	}
	return first
}

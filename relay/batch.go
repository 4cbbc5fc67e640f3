package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/meshvpn/meshvpn/internal/udpgso"
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

// batchWriter sends queued datagrams with as few system calls as it can,
// and with UDP GSO where the kernel has it: a run of equal-sized datagrams
// to one address (the last may be shorter) goes as one buffer the kernel
// cuts, so it crosses the stack, and the routers on the way, once. It is
// safe for concurrent use.
type batchWriter struct {
	mu  sync.Mutex
	pc  *ipv4.PacketConn
	gso bool
	// out, spans and bufs are the coalesced messages of one write, the
	// datagrams each carries, and the buffers GSO runs are copied into.
	out   []ipv4.Message
	spans []int
	bufs  udpgso.Bufs
}

func newBatchWriter(c *net.UDPConn) *batchWriter {
	return &batchWriter{pc: ipv4.NewPacketConn(c), gso: udpgso.Supported(c)}
}

// errBatchStalled is returned when the kernel takes no datagram of a batch
// several times in a row.
var errBatchStalled = errors.New("relay: socket takes no datagrams")

// write sends msgs in order. A datagram the kernel refuses (an unreachable
// peer, a full buffer) is dropped as a lost packet would be, and the rest
// still go (with GSO, the run it was sent in); the first such error is
// returned.
func (w *batchWriter) write(msgs []ipv4.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.gso {
		return w.send(msgs)
	}
	out := w.coalesce(msgs)
	err := w.send(out)
	if err != nil && udpgso.Unsupported(err) {
		// A device without UDP segmentation offload says so with EIO:
		// the runs go again, one datagram each, and from now on all do.
		w.gso = false
		var again []ipv4.Message
		k := 0
		for i, m := range out {
			if len(m.OOB) > 0 {
				again = append(again, msgs[k:k+w.spans[i]]...)
			}
			k += w.spans[i]
		}
		return w.send(again)
	}
	return err
}

func (w *batchWriter) send(msgs []ipv4.Message) error {
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

// coalesce lays msgs (one buffer each) out as GSO messages: runs of
// datagrams of one size to one address become one buffer cut at that
// size; a shorter datagram ends a run.
func (w *batchWriter) coalesce(msgs []ipv4.Message) []ipv4.Message {
	w.out, w.spans = w.out[:0], w.spans[:0]
	w.bufs.Reset()
	for i := 0; i < len(msgs); {
		size := len(msgs[i].Buffers[0])
		j := udpgso.RunEnd(len(msgs), i, func(k int) int {
			if !sameAddr(msgs[k].Addr, msgs[i].Addr) {
				return size + 1 // another destination ends the run
			}
			return len(msgs[k].Buffers[0])
		}, 0)
		if size == 0 {
			j = i + 1 // nothing to cut
		}
		w.spans = append(w.spans, j-i)
		if j-i == 1 {
			w.out = append(w.out, msgs[i:j]...)
			i = j
			continue
		}
		buf := w.bufs.Next()
		for _, m := range msgs[i:j] {
			buf = append(buf, m.Buffers[0]...)
		}
		var oob []byte
		if n := len(w.out); n < cap(w.out) {
			oob = w.out[:n+1][n].OOB // reuse the space a former write left
		}
		w.out = append(w.out, ipv4.Message{Buffers: [][]byte{buf}, OOB: udpgso.Control(oob, size), Addr: msgs[i].Addr})
		i = j
	}
	return w.out
}

func sameAddr(a, b net.Addr) bool {
	if a == b {
		return true
	}
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	return ok1 && ok2 && ua.Port == ub.Port && ua.IP.Equal(ub.IP) && ua.Zone == ub.Zone
}

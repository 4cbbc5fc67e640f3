package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TURN over a stream: the shared relay client on a TCP or TLS relay, for a
// site that blocks UDP. The messages are those of UDP, framed by their own
// headers on one connection (RFC 8656 §3.1, no RFC 6062 data connections):
// a STUN message is its 20-byte header and the length that header gives; a
// ChannelData message is its 4-byte header and its data padded to 4 bytes
// (RFC 8656 §12.5: padding is required over a stream). Anything else on
// the stream is garbage: the framing is lost, so the stream is dropped and
// the agent opens a new allocation.
//
// Bounds: a header's 16-bit length caps a frame at 64 KiB, and the reader
// reads into fixed buffers of streamBatchSize (a few, as over UDP), which
// a frame always fits; a relay can make it neither allocate more nor log
// what it sent.

const (
	// streamBatchSize is one read batch's buffer: many frames, and at
	// least one whole frame of the largest size (maxStreamFrame) besides
	// the start of the next.
	streamBatchSize = 256 << 10
	// maxStreamFrame: a STUN header and 64 KiB of attributes; ChannelData
	// is at most 4+65535+1.
	maxStreamFrame = 20 + 0xffff
	// streamWriteTimeout: a relay that takes nothing for this long (its
	// TCP window shut) is as good as gone.
	streamWriteTimeout = 5 * time.Second
)

// relayStream is a RelayClient's connection to a TCP or TLS relay.
type relayStream struct {
	conn   net.Conn
	failed atomic.Bool
	broken chan struct{} // closed when failed: requests stop waiting
	// mu keeps each write's frames together on the stream; wbuf is the
	// write buffer, reused under it.
	mu   sync.Mutex
	wbuf []byte
}

func newRelayStream(conn net.Conn) *relayStream {
	return &relayStream{conn: conn, broken: make(chan struct{})}
}

// write sends one STUN message.
func (s *relayStream) write(c *RelayClient, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked(c, p)
}

// writeChannelData sends WireGuard messages as padded ChannelData on
// channel num, the batch in one write (one TLS record run, one segment
// train).
func (s *relayStream) writeChannelData(c *RelayClient, num uint16, bufs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.wbuf[:0]
	for _, p := range bufs {
		if len(p) > 0xffff {
			continue // cannot be framed; WireGuard never sends it
		}
		b = binary.BigEndian.AppendUint16(b, num)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
		for range pad4(len(p)) - len(p) {
			b = append(b, 0)
		}
	}
	s.wbuf = b
	return s.flushLocked(c, b)
}

func (s *relayStream) flushLocked(c *RelayClient, b []byte) error {
	if s.failed.Load() {
		return net.ErrClosed
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := s.conn.Write(b); err != nil {
		// Part of a frame may be on the stream: the framing is lost.
		c.streamFailed(fmt.Errorf("write: %w", err))
		return err
	}
	return nil
}

func pad4(n int) int { return (n + 3) &^ 3 }

var errStreamGarbage = errors.New("relay stream: garbage")

// streamFrame reads the header at the start of p: how many bytes the frame
// takes on the stream, its padding included, or 0 while p is too short to
// tell. A header that is neither STUN nor ChannelData is an error, which
// says nothing of its size the sender chose beyond a number.
func streamFrame(p []byte) (int, error) {
	if len(p) < 4 {
		return 0, nil
	}
	size := int(binary.BigEndian.Uint16(p[2:]))
	switch p[0] >> 6 {
	case 0: // STUN
		if size%4 != 0 {
			return 0, fmt.Errorf("%w: STUN length %d not a multiple of 4", errStreamGarbage, size)
		}
		if len(p) >= 8 && binary.BigEndian.Uint32(p[4:]) != stunMagicCookie {
			return 0, fmt.Errorf("%w: STUN header without the magic cookie", errStreamGarbage)
		}
		return 20 + size, nil
	case 1: // ChannelData
		if num := binary.BigEndian.Uint16(p); num > maxChannel {
			return 0, fmt.Errorf("%w: channel number %#04x out of range", errStreamGarbage, num)
		}
		return 4 + pad4(size), nil
	}
	return 0, fmt.Errorf("%w: first byte %#02x is neither STUN nor ChannelData", errStreamGarbage, p[0])
}

// streamFailed drops the stream: the allocation is lost with it (the relay
// frees a stream's allocation when the stream ends), and the agent makes a
// new one. Logged once per stream.
func (c *RelayClient) streamFailed(err error) {
	s := c.stream
	if !s.failed.CompareAndSwap(false, true) {
		return
	}
	c.dead.Store(true)
	s.conn.Close()
	close(s.broken)
	select {
	case <-c.closed:
		return // we closed it
	default:
	}
	c.log.Warn("relay stream lost", "relay", c.t.URL, "err", err)
}

// streamReadLoop reads the stream into a batch's buffer and takes every
// whole frame in it (relayread.go's take: ChannelData of a bound channel
// to WireGuard, STUN to its request). A batch that holds WireGuard
// messages is queued whole, and the start of a frame cut by the read
// moves to the next batch.
func (c *RelayClient) streamReadLoop() {
	// spare is read into while WireGuard holds all the batches: its
	// WireGuard messages are dropped, as a full socket buffer would.
	spare := c.newInBatch(nil)
	b := c.batch()
	if b == nil {
		b = spare
	}
	have := 0 // bytes in b.bufs[0]
	for {
		if b == spare {
			if nb := c.batch(); nb != nil {
				have = copy(nb.bufs[0], spare.bufs[0][:have])
				b = nb
			}
		}
		buf := b.bufs[0]
		n, err := c.stream.conn.Read(buf[have:])
		if err != nil {
			c.unused(b, spare)
			c.streamFailed(fmt.Errorf("read: %w", err))
			return
		}
		have += n
		r := reading{c: c, b: b, chans: *c.chans.Load(), drop: b == spare}
		off := 0
		for {
			size, err := streamFrame(buf[off:have])
			if err != nil {
				c.unused(b, spare)
				c.streamFailed(err)
				return
			}
			if size == 0 || off+size > have {
				break
			}
			r.take(buf[off : off+size])
			off += size
		}
		if len(b.msgs) == 0 {
			// Nothing points into buf: keep the cut frame's start and
			// read on into it.
			have = copy(buf, buf[off:have])
			continue
		}
		next := c.batch()
		if next == nil {
			next = spare
		}
		have = copy(next.bufs[0], buf[off:have])
		c.in.push(b)
		b = next
	}
}

package datapath

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshvpn/meshvpn/internal/udpgso"
)

// The relay client's receive path. One goroutine reads the socket with
// recvmmsg straight into a batch (relayin.go) and queues the batch whole.
// With UDP GRO the kernel hands over the datagrams that arrived together
// (the relay sends runs of them with GSO) as one buffer cut into equal
// segments: a read slot then holds up to 64 ChannelData messages, which
// stay where they are, WireGuard copying each out.

const (
	// relayReadBatch datagrams are read per recvmmsg without GRO,
	// relayReadSlotsGRO coalesced buffers with it: a batch holds 512 KiB
	// either way.
	relayReadBatch    = 64
	relayReadSize     = 8192
	relayReadSlotsGRO = 8
	relayReadSizeGRO  = 65535
	// relayReadBatches bounds the batches a client has in WireGuard's hands.
	relayReadBatches = 8
)

// readLoop reads the socket in batches: ChannelData goes to WireGuard by
// channel number, STUN answers to the request waiting for them.
func (c *RelayClient) readLoop() {
	slots := relayReadBatch
	if c.gro {
		slots = relayReadSlotsGRO
	}
	msgs := make([]ipv4.Message, slots)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
		if c.gro {
			msgs[i].OOB = make([]byte, udpgso.GROSpace)
		}
	}
	// spare is read into while WireGuard holds all the batches: its
	// WireGuard messages are dropped, as a full socket buffer would.
	spare := c.newInBatch(nil)
	for {
		b := c.batch()
		if b == nil {
			b = spare
		}
		for i := range msgs {
			msgs[i].Buffers[0] = b.bufs[i]
		}
		n, err := c.bpc.ReadBatch(msgs, 0)
		if err != nil {
			c.unused(b, spare)
			select {
			case <-c.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r := reading{c: c, b: b, chans: *c.chans.Load(), drop: b == spare}
		for i := 0; i < n; i++ {
			m := &msgs[i]
			if ua, ok := m.Addr.(*net.UDPAddr); !ok || !ua.IP.Equal(c.server.IP) || ua.Port != c.server.Port {
				continue // only the relay talks to this socket
			}
			p := m.Buffers[0][:m.N]
			seg := 0
			if c.gro {
				seg = udpgso.GROSize(m.OOB[:m.NN])
			}
			if seg <= 0 || seg >= len(p) {
				r.take(p)
				continue
			}
			for len(p) > 0 {
				k := min(seg, len(p))
				r.take(p[:k])
				p = p[k:]
			}
		}
		if len(b.msgs) == 0 {
			c.unused(b, spare)
			continue
		}
		c.in.push(b)
	}
}

// reading is one read's demultiplexing.
type reading struct {
	c     *RelayClient
	b     *inBatch
	chans map[uint16]*RelayChan
	drop  bool // WireGuard holds all the batches
	now   time.Time
}

// take handles one datagram from the relay: ChannelData of a bound
// channel carrying WireGuard joins the batch, STUN goes to its request.
func (r *reading) take(p []byte) {
	if len(p) < 4 || p[0]&0xc0 != 0x40 {
		r.c.handleSTUN(p)
		return
	}
	num := binary.BigEndian.Uint16(p)
	size := int(binary.BigEndian.Uint16(p[2:]))
	ch := r.chans[num]
	if ch == nil || size > len(p)-4 || !IsWireGuard(p[4:4+size]) || r.drop {
		return
	}
	var ep conn.Endpoint = ch.ep
	if h := ch.roam.Load(); h != nil {
		if r.now.IsZero() {
			r.now = time.Now()
		}
		ep = h.Endpoint(ch.ep, r.now)
	}
	r.b.msgs = append(r.b.msgs, inMsg{p: p[4 : 4+size], ep: ep})
}

// batch is a free batch to read into, nil when WireGuard holds them all.
func (c *RelayClient) batch() *inBatch {
	select {
	case b := <-c.free:
		return b
	default:
	}
	if c.made < relayReadBatches {
		c.made++
		return c.newInBatch(c.free)
	}
	return nil
}

// unused takes back a batch that carried nothing.
func (c *RelayClient) unused(b, spare *inBatch) {
	if b != spare {
		b.release()
	}
}

func (c *RelayClient) newInBatch(free chan *inBatch) *inBatch {
	slots, size := relayReadBatch, relayReadSize
	switch {
	case c.stream != nil:
		slots, size = 1, streamBatchSize // relaystream.go
	case c.gro:
		slots, size = relayReadSlotsGRO, relayReadSizeGRO
	}
	b := &inBatch{bufs: make([][]byte, slots), msgs: make([]inMsg, 0, relayReadBatch), free: free}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

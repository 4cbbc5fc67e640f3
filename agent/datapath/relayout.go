package datapath

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"

	"golang.org/x/net/ipv4"

	"github.com/meshvpn/meshvpn/internal/udpgso"
)

// The relay client's send path. WireGuard's batch for one relayed peer
// goes out as ChannelData, RFC 8656 §12.5 (a 4-byte header: channel
// number and length; over UDP the padding to 4 bytes may be left out),
// in one sendmmsg. With UDP GSO, runs of equal-sized messages (the last of
// a run may be shorter) are laid out header, message, header, message…
// in one buffer that the kernel cuts into datagrams: one trip through the
// stack (and the routers of a lab, which forward it whole) for up to 64
// datagrams, as StdNetBind sends the direct path. Without GSO each
// message is two iovecs, header and message, no copy.

// outBatch is one writeBatch's messages, headers and GSO buffers, reused.
type outBatch struct {
	msgs []ipv4.Message
	hdrs []byte
	bufs udpgso.Bufs
}

var outPool = sync.Pool{New: func() any { return &outBatch{} }}

// Write sends one WireGuard message to the channel's peer as ChannelData.
func (ch *RelayChan) Write(p []byte) (int, error) {
	return len(p), ch.writeBatch([][]byte{p})
}

// writeBatch sends WireGuard messages as ChannelData to the channel's peer.
func (ch *RelayChan) writeBatch(bufs [][]byte) error {
	c := ch.c
	if c.stream != nil {
		return c.stream.writeChannelData(c, ch.num, bufs)
	}
	b := outPool.Get().(*outBatch)
	defer outPool.Put(b)
	gso := c.gso.Load()
	err := c.write(b.fill(ch.num, bufs, c.server, gso))
	if err != nil && gso && udpgso.Unsupported(err) {
		// A device without UDP segmentation offload says so with EIO.
		c.gso.Store(false)
		err = c.write(b.fill(ch.num, bufs, c.server, false))
	}
	if err != nil {
		return fmt.Errorf("write to relay: %w", err)
	}
	return nil
}

func (c *RelayClient) write(msgs []ipv4.Message) error {
	for len(msgs) > 0 {
		n, err := c.bpc.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// fill lays bufs out as ChannelData messages on channel num to addr,
// coalesced when gso.
func (b *outBatch) fill(num uint16, bufs [][]byte, addr *net.UDPAddr, gso bool) []ipv4.Message {
	if cap(b.hdrs) < 4*len(bufs) {
		b.hdrs = make([]byte, 4*len(bufs))
	}
	n := 0
	b.bufs.Reset()
	for i := 0; i < len(bufs); {
		size := len(bufs[i])
		j := i + 1
		if gso {
			j = udpgso.RunEnd(len(bufs), i, func(k int) int { return len(bufs[k]) }, 4)
		}
		if n == len(b.msgs) {
			b.msgs = append(b.msgs, ipv4.Message{Buffers: make([][]byte, 2)})
		}
		m := &b.msgs[n]
		n++
		m.Addr, m.OOB = addr, m.OOB[:0]
		if j-i == 1 {
			h := b.hdrs[4*i : 4*i+4]
			binary.BigEndian.PutUint16(h, num)
			binary.BigEndian.PutUint16(h[2:], uint16(size))
			m.Buffers = m.Buffers[:2]
			m.Buffers[0], m.Buffers[1] = h, bufs[i]
			i = j
			continue
		}
		buf := b.bufs.Next()
		for _, p := range bufs[i:j] {
			buf = binary.BigEndian.AppendUint16(buf, num)
			buf = binary.BigEndian.AppendUint16(buf, uint16(len(p)))
			buf = append(buf, p...)
		}
		m.Buffers = m.Buffers[:1]
		m.Buffers[0] = buf
		m.OOB = udpgso.Control(m.OOB, 4+size)
		i = j
	}
	return b.msgs[:n]
}

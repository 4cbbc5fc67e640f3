package meshdns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Forwarding limits: each upstream gets upstreamTimeout, tried in order
// (resolv.conf has at most three).
const (
	upstreamTimeout = 2 * time.Second
	maxUpstreams    = 3
	maxMsg          = 65535
)

// forwarder sends queries the mesh does not answer to the host's original
// resolvers, as they came: the client's EDNS size, flags and ID pass
// through, and the answer comes back byte for byte.
type forwarder struct {
	upstreams []netip.AddrPort
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

// exchange forwards msg (whose question is q) over network ("udp" or
// "tcp") and returns the first matching answer.
func (f *forwarder) exchange(ctx context.Context, network string, msg []byte, q query) ([]byte, error) {
	if len(f.upstreams) == 0 {
		return nil, errors.New("no upstream resolver")
	}
	var errs []error
	for _, up := range f.upstreams {
		ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
		resp, err := f.one(ctx, network, up, msg, q)
		cancel()
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (f *forwarder) one(ctx context.Context, network string, up netip.AddrPort, msg []byte, q query) ([]byte, error) {
	// A fresh socket per query: a random source port for every one.
	c, err := f.dial(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	if network == "tcp" {
		return exchangeTCP(c, msg, q)
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMsg)
	for range 8 { // stray datagrams are skipped, a few at most
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if matches(buf[:n], q) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
	return nil, errors.New("no matching answer")
}

func exchangeTCP(c net.Conn, msg []byte, q query) ([]byte, error) {
	out := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	copy(out[2:], msg)
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	resp, err := readTCPMsg(c)
	if err != nil {
		return nil, err
	}
	if !matches(resp, q) {
		return nil, errors.New("answer does not match the query")
	}
	return resp, nil
}

// readTCPMsg reads one length-prefixed DNS message.
func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// matches tells whether resp answers q: same ID, a response, same question.
func matches(resp []byte, q query) bool {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil || !h.Response || h.ID != q.hdr.ID {
		return false
	}
	rq, err := p.Question()
	if err != nil {
		// A truncated or failed answer may carry no question.
		return errors.Is(err, dnsmessage.ErrSectionDone)
	}
	return rq.Type == q.q.Type && rq.Class == q.q.Class && strings.EqualFold(rq.Name.String(), q.q.Name.String())
}

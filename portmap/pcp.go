package portmap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// PCP (RFC 6887): the MAP opcode for one UDP port, and ANNOUNCE to probe.
// Every address on the wire is 16 bytes, IPv4 as IPv4-mapped IPv6.

const (
	pcpVersion    = 2
	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpReplyBit   = 0x80
	pcpHeaderLen  = 24
	pcpMapLen     = 36
	protoUDP      = 17
)

var pcpResultText = map[byte]string{
	1:  "unsupported version",
	2:  "not authorized",
	3:  "malformed request",
	4:  "unsupported opcode",
	5:  "unsupported option",
	6:  "malformed option",
	7:  "network failure",
	8:  "no resources",
	9:  "unsupported protocol",
	10: "user exceeded quota",
	11: "cannot provide external port or address",
	12: "address mismatch (client address not as seen by the server)",
	13: "excessive remote peers",
}

// pcpError is a non-zero PCP result code.
type pcpError byte

func (e pcpError) Error() string {
	if s, ok := pcpResultText[byte(e)]; ok {
		return "PCP: " + s
	}
	return fmt.Sprintf("PCP: result code %d", byte(e))
}

type pcpResponse struct {
	Op       byte
	Result   byte
	Lifetime uint32
	Epoch    uint32
	// MAP answers only.
	Nonce        [12]byte
	Protocol     byte
	InternalPort uint16
	ExternalPort uint16
	External     netip.Addr
}

// parsePCPResponse decodes a PCP answer; options after the opcode data are
// ignored.
func parsePCPResponse(data []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(data) < pcpHeaderLen {
		return r, fmt.Errorf("PCP answer too short (%d bytes)", len(data))
	}
	if len(data) > maxAnswer || len(data)%4 != 0 {
		return r, fmt.Errorf("PCP answer has a bad length (%d bytes)", len(data))
	}
	if data[0] != pcpVersion {
		// A NAT-PMP-only server answers a PCP request with its own version 0
		// and "unsupported version".
		return r, fmt.Errorf("PCP answer has version %d", data[0])
	}
	if data[1]&pcpReplyBit == 0 {
		return r, errors.New("PCP message is a request, not an answer")
	}
	r.Op = data[1] &^ pcpReplyBit
	r.Result = data[3]
	r.Lifetime = binary.BigEndian.Uint32(data[4:8])
	r.Epoch = binary.BigEndian.Uint32(data[8:12])
	if r.Op != pcpOpMap || r.Result != 0 {
		return r, nil
	}
	body := data[pcpHeaderLen:]
	if len(body) < pcpMapLen {
		return r, fmt.Errorf("PCP MAP answer too short (%d bytes)", len(data))
	}
	copy(r.Nonce[:], body[0:12])
	r.Protocol = body[12]
	r.InternalPort = binary.BigEndian.Uint16(body[16:18])
	r.ExternalPort = binary.BigEndian.Uint16(body[18:20])
	r.External = netip.AddrFrom16([16]byte(body[20:36])).Unmap()
	return r, nil
}

func pcpHeader(op byte, lifetime uint32, client netip.Addr) []byte {
	b := make([]byte, pcpHeaderLen)
	b[0], b[1] = pcpVersion, op
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	a := mapped4(client)
	copy(b[8:24], a[:])
	return b
}

// mapped4 is an address in PCP's 16 bytes: IPv4 as IPv4-mapped IPv6
// (::ffff:a.b.c.d), which is what As16 gives for an IPv4 address.
func mapped4(ip netip.Addr) [16]byte {
	return ip.As16()
}

func pcpMapRequest(client netip.Addr, nonce [12]byte, internal, external uint16, suggestIP netip.Addr, lifetime uint32) []byte {
	b := pcpHeader(pcpOpMap, lifetime, client)
	body := make([]byte, pcpMapLen)
	copy(body[0:12], nonce[:])
	body[12] = protoUDP
	binary.BigEndian.PutUint16(body[16:18], internal)
	binary.BigEndian.PutUint16(body[18:20], external)
	sug := netip.IPv4Unspecified()
	if suggestIP.IsValid() {
		sug = suggestIP
	}
	a := mapped4(sug)
	copy(body[20:36], a[:])
	return append(b, body...)
}

// pcpClient maps ports with PCP.
type pcpClient struct {
	server netip.AddrPort
	local  netip.Addr
	nonce  [12]byte // one per mapping; a renewal must repeat it

	mu    sync.Mutex
	epoch epoch
}

func newPCPClient(gw netip.Addr, port uint16, local netip.Addr) *pcpClient {
	c := &pcpClient{server: netip.AddrPortFrom(gw, port), local: local}
	_, _ = rand.Read(c.nonce[:])
	return c
}

func (c *pcpClient) protocol() Protocol { return PCP }

func (c *pcpClient) call(ctx context.Context, req []byte, op byte) (pcpResponse, error) {
	var resp pcpResponse
	var perr error
	_, err := roundTrip(ctx, c.server, req, func(b []byte) bool {
		if len(b) >= 4 && b[0] == pmpVersion && b[1]&pmpReplyBit != 0 {
			// A NAT-PMP server refusing version 2: a definite "no PCP here".
			perr = errors.New("gateway speaks NAT-PMP, not PCP")
			resp = pcpResponse{Result: 1}
			return true
		}
		r, err := parsePCPResponse(b)
		if err != nil {
			perr = err
			return false
		}
		if r.Op != op || (op == pcpOpMap && r.Result == 0 && r.Nonce != c.nonce) {
			return false
		}
		resp = r
		return true
	})
	if err != nil {
		if perr != nil {
			return resp, fmt.Errorf("%w (last bad answer: %v)", err, perr)
		}
		return resp, err
	}
	if resp.Result != 0 {
		if perr != nil {
			return resp, perr
		}
		return resp, pcpError(resp.Result)
	}
	c.mu.Lock()
	c.epoch.observe(resp.Epoch, time.Now())
	c.mu.Unlock()
	return resp, nil
}

// probe sends ANNOUNCE, which every PCP server answers (RFC 6887 14.1).
func (c *pcpClient) probe(ctx context.Context) (netip.Addr, error) {
	_, err := c.call(ctx, pcpHeader(pcpOpAnnounce, 0, c.local), pcpOpAnnounce)
	return netip.Addr{}, err
}

func (c *pcpClient) checkEpoch(ctx context.Context) (bool, error) {
	c.mu.Lock()
	before := c.epoch
	c.mu.Unlock()
	r, err := c.call(ctx, pcpHeader(pcpOpAnnounce, 0, c.local), pcpOpAnnounce)
	if err != nil {
		return false, err
	}
	return before.observe(r.Epoch, time.Now()), nil
}

func (c *pcpClient) mapPort(ctx context.Context, internal, wantExternal uint16, lease time.Duration) (Mapping, error) {
	r, err := c.call(ctx, pcpMapRequest(c.local, c.nonce, internal, wantExternal, netip.Addr{}, uint32(lease/time.Second)), pcpOpMap)
	if err != nil {
		return Mapping{}, err
	}
	if r.Protocol != protoUDP || r.InternalPort != internal || r.ExternalPort == 0 || r.Lifetime == 0 {
		return Mapping{}, fmt.Errorf("PCP answer does not grant the mapping (protocol %d, internal %d, external %d, lifetime %d)", r.Protocol, r.InternalPort, r.ExternalPort, r.Lifetime)
	}
	if err := checkExternal(r.External); err != nil {
		// Granted but useless: take it back rather than leave it open.
		_, _ = c.call(ctx, pcpMapRequest(c.local, c.nonce, internal, 0, netip.Addr{}, 0), pcpOpMap)
		return Mapping{}, err
	}
	return Mapping{
		Protocol:     PCP,
		External:     netip.AddrPortFrom(r.External, r.ExternalPort),
		InternalPort: internal,
		Lease:        time.Duration(r.Lifetime) * time.Second,
		Obtained:     time.Now(),
	}, nil
}

// unmap deletes the mapping: a MAP with the same nonce and lifetime 0.
func (c *pcpClient) unmap(ctx context.Context, m Mapping) error {
	_, err := c.call(ctx, pcpMapRequest(c.local, c.nonce, m.InternalPort, 0, netip.Addr{}, 0), pcpOpMap)
	return err
}

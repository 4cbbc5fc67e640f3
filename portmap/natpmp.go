package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// NAT-PMP (RFC 6886). The module github.com/jackpal/go-nat-pmp speaks it
// too, but it always uses port 5351 and hides its transport, so neither a
// fake gateway on loopback nor a fuzzed parser could reach it; the protocol
// is four fixed-size messages, so we carry our own codec.

const (
	pmpVersion        = 0
	pmpOpExternalAddr = 0
	pmpOpMapUDP       = 1
	pmpReplyBit       = 128
)

// pmpResultText names the result codes of RFC 6886 3.5.
var pmpResultText = map[uint16]string{
	1: "unsupported version",
	2: "not authorized or refused",
	3: "network failure",
	4: "out of resources",
	5: "unsupported opcode",
}

// pmpError is a non-zero NAT-PMP result code.
type pmpError uint16

func (e pmpError) Error() string {
	if s, ok := pmpResultText[uint16(e)]; ok {
		return "NAT-PMP: " + s
	}
	return fmt.Sprintf("NAT-PMP: result code %d", uint16(e))
}

// pmpResponse is a parsed NAT-PMP answer; the fields a reply does not carry
// stay zero.
type pmpResponse struct {
	Op           byte // request opcode answered
	Result       uint16
	Epoch        uint32
	External     netip.Addr // external-address reply
	InternalPort uint16     // mapping reply
	ExternalPort uint16
	Lifetime     uint32
}

// parsePMPResponse decodes a NAT-PMP answer. It checks everything a broken
// or hostile gateway could get wrong and never reads past data.
func parsePMPResponse(data []byte) (pmpResponse, error) {
	var r pmpResponse
	if len(data) < 8 {
		return r, fmt.Errorf("NAT-PMP answer too short (%d bytes)", len(data))
	}
	if data[0] != pmpVersion {
		return r, fmt.Errorf("NAT-PMP answer has version %d", data[0])
	}
	if data[1]&pmpReplyBit == 0 {
		return r, errors.New("NAT-PMP message is a request, not an answer")
	}
	r.Op = data[1] &^ pmpReplyBit
	r.Result = binary.BigEndian.Uint16(data[2:4])
	r.Epoch = binary.BigEndian.Uint32(data[4:8])
	if r.Result != 0 {
		// Error answers may be cut short (RFC 6886 3.5): the header is all.
		return r, nil
	}
	switch r.Op {
	case pmpOpExternalAddr:
		if len(data) < 12 {
			return r, fmt.Errorf("NAT-PMP external-address answer too short (%d bytes)", len(data))
		}
		r.External = netip.AddrFrom4([4]byte(data[8:12]))
	case pmpOpMapUDP, pmpOpMapUDP + 1:
		if len(data) < 16 {
			return r, fmt.Errorf("NAT-PMP mapping answer too short (%d bytes)", len(data))
		}
		r.InternalPort = binary.BigEndian.Uint16(data[8:10])
		r.ExternalPort = binary.BigEndian.Uint16(data[10:12])
		r.Lifetime = binary.BigEndian.Uint32(data[12:16])
	default:
		return r, fmt.Errorf("NAT-PMP answer for unknown opcode %d", r.Op)
	}
	return r, nil
}

func pmpExternalAddrRequest() []byte { return []byte{pmpVersion, pmpOpExternalAddr} }

func pmpMapRequest(internal, external uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], external)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// pmpClient maps ports with NAT-PMP.
type pmpClient struct {
	server netip.AddrPort

	mu    sync.Mutex
	epoch epoch
}

func newPMPClient(gw netip.Addr, port uint16) *pmpClient {
	return &pmpClient{server: netip.AddrPortFrom(gw, port)}
}

func (c *pmpClient) protocol() Protocol { return NATPMP }

// call sends req and waits for a well-formed answer to opcode op.
func (c *pmpClient) call(ctx context.Context, req []byte, op byte) (pmpResponse, error) {
	var resp pmpResponse
	var perr error
	_, err := roundTrip(ctx, c.server, req, func(b []byte) bool {
		r, err := parsePMPResponse(b)
		if err != nil {
			perr = err
			return false
		}
		if r.Op != op {
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
		return resp, pmpError(resp.Result)
	}
	return resp, nil
}

// externalAddr asks for the gateway's external address; reset tells whether
// the gateway restarted since the previous answer.
func (c *pmpClient) externalAddr(ctx context.Context) (ip netip.Addr, reset bool, err error) {
	r, err := c.call(ctx, pmpExternalAddrRequest(), pmpOpExternalAddr)
	if err != nil {
		return netip.Addr{}, false, err
	}
	c.mu.Lock()
	reset = c.epoch.observe(r.Epoch, time.Now())
	c.mu.Unlock()
	return r.External, reset, nil
}

func (c *pmpClient) probe(ctx context.Context) (netip.Addr, error) {
	ip, _, err := c.externalAddr(ctx)
	return ip, err
}

func (c *pmpClient) mapPort(ctx context.Context, internal, wantExternal uint16, lease time.Duration) (Mapping, error) {
	ip, _, err := c.externalAddr(ctx)
	if err != nil {
		return Mapping{}, err
	}
	if err := checkExternal(ip); err != nil {
		return Mapping{}, err
	}
	r, err := c.call(ctx, pmpMapRequest(internal, wantExternal, uint32(lease/time.Second)), pmpOpMapUDP)
	if err != nil {
		return Mapping{}, err
	}
	c.mu.Lock()
	c.epoch.observe(r.Epoch, time.Now())
	c.mu.Unlock()
	if r.InternalPort != internal || r.ExternalPort == 0 || r.Lifetime == 0 {
		return Mapping{}, fmt.Errorf("NAT-PMP answer does not grant the mapping (internal %d, external %d, lifetime %d)", r.InternalPort, r.ExternalPort, r.Lifetime)
	}
	return Mapping{
		Protocol:     NATPMP,
		External:     netip.AddrPortFrom(ip, r.ExternalPort),
		InternalPort: internal,
		Lease:        time.Duration(r.Lifetime) * time.Second,
		Obtained:     time.Now(),
	}, nil
}

// checkEpoch reports whether the gateway lost its mappings (rebooted).
func (c *pmpClient) checkEpoch(ctx context.Context) (bool, error) {
	_, reset, err := c.externalAddr(ctx)
	return reset, err
}

// unmap deletes the mapping: lifetime 0 and external port 0 (RFC 6886 3.4).
func (c *pmpClient) unmap(ctx context.Context, m Mapping) error {
	_, err := c.call(ctx, pmpMapRequest(m.InternalPort, 0, 0), pmpOpMapUDP)
	return err
}

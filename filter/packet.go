// Package filter is the agent's stateful packet filter: it enforces the
// node's rules from the access policy between the TUN device and
// WireGuard, and lets replies of tracked connections through.
package filter

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Protocol numbers the filter looks into.
const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// ICMP types.
const (
	icmpEchoReply   = 0
	icmpUnreachable = 3
	icmpEcho        = 8
	icmpTimeExceed  = 11
	icmpParamProb   = 12
)

// packet is what the filter needs of an IPv4 packet. For ICMP echo
// messages both ports hold the echo identifier, so a request and its reply
// share a connection key.
type packet struct {
	proto            uint8
	src, dst         netip.Addr
	srcPort, dstPort uint16
	tcpFlags         uint8
	icmpType         uint8
	// fragment is a non-first fragment: no transport header to read.
	fragment bool
	// icmp6 is an ICMPv6 packet, which proto calls ICMP (so that "icmp"
	// rules cover both families); a rule for protocol 58 matches it too.
	icmp6 bool
	// inner is, for an ICMP error, the header of the packet it is about.
	inner *packet
}

var (
	errShort   = errors.New("packet too short")
	errVersion = errors.New("not IPv4")
	errHeader  = errors.New("bad IPv4 header")
)

// parse reads an IPv4 header and the start of its transport header. It
// never reads past b, whatever the lengths inside b claim.
func parse(b []byte) (packet, error) {
	var p packet
	if len(b) < 20 {
		return p, errShort
	}
	if b[0]>>4 == 6 {
		return parse6(b)
	}
	if b[0]>>4 != 4 {
		return p, errVersion
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || total < ihl || len(b) < ihl {
		return p, errHeader
	}
	if total < len(b) {
		b = b[:total] // ignore padding after the packet
	}
	p.proto = b[9]
	p.src = netip.AddrFrom4([4]byte(b[12:16]))
	p.dst = netip.AddrFrom4([4]byte(b[16:20]))
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		p.fragment = true
		return p, nil
	}
	l4 := b[ihl:]
	switch p.proto {
	case protoTCP, protoUDP:
		if err := p.readPorts(l4); err != nil {
			return p, err
		}
	case protoICMP:
		if len(l4) < 8 {
			return p, errShort
		}
		p.icmpType = l4[0]
		switch p.icmpType {
		case icmpEcho, icmpEchoReply:
			id := binary.BigEndian.Uint16(l4[4:6])
			p.srcPort, p.dstPort = id, id
		case icmpUnreachable, icmpTimeExceed, icmpParamProb:
			// The error quotes the header of the packet it is about:
			// the filter lets it through as part of that connection.
			if in, err := parseQuoted(l4[8:]); err == nil {
				p.inner = &in
			}
		}
	}
	return p, nil
}

// parseQuoted reads the IPv4 header and first 8 transport bytes an ICMP
// error quotes (the quoted total length covers bytes that are not there).
func parseQuoted(b []byte) (packet, error) {
	var p packet
	if len(b) < 20 || b[0]>>4 != 4 {
		return p, errShort
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+8 {
		return p, errHeader
	}
	p.proto = b[9]
	p.src = netip.AddrFrom4([4]byte(b[12:16]))
	p.dst = netip.AddrFrom4([4]byte(b[16:20]))
	l4 := b[ihl:]
	switch p.proto {
	case protoTCP, protoUDP:
		p.srcPort, p.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case protoICMP:
		if l4[0] == icmpEcho || l4[0] == icmpEchoReply {
			id := binary.BigEndian.Uint16(l4[4:6])
			p.srcPort, p.dstPort = id, id
		}
	}
	return p, nil
}

// readPorts reads a TCP or UDP header's ports (and TCP's flags).
func (p *packet) readPorts(l4 []byte) error {
	need := 8
	if p.proto == protoTCP {
		need = 14
	}
	if len(l4) < need {
		return errShort
	}
	p.srcPort, p.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	if p.proto == protoTCP {
		p.tcpFlags = l4[13]
	}
	return nil
}

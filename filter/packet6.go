package filter

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 protocol numbers and ICMPv6 types the filter looks into.
const (
	protoICMPv6 = 58

	icmp6Unreachable = 1
	icmp6TooBig      = 2
	icmp6TimeExceed  = 3
	icmp6ParamProb   = 4
	icmp6Echo        = 128
	icmp6EchoReply   = 129
)

// IPv6 extension headers (RFC 8200 §4) walked to reach the transport
// header.
const (
	nhHopOpts   = 0
	nhRouting   = 43
	nhFragment6 = 44
	nhAH        = 51
	nhDstOpts   = 60
)

// maxExtHeaders bounds the walk: real packets carry a handful, and a long
// chain is only good for pushing the transport header out of sight.
const maxExtHeaders = 8

// walk6 follows b's extension headers (b starts at the IPv6 header) to
// the transport header: its protocol, its offset in b, and whether b is a
// fragment after the first (no transport header then).
func walk6(b []byte) (proto uint8, off int, fragment bool, err error) {
	proto, off = b[6], 40
	for range maxExtHeaders {
		switch proto {
		case nhHopOpts, nhRouting, nhDstOpts:
			if len(b) < off+8 {
				return 0, 0, false, errShort
			}
			proto, off = b[off], off+(int(b[off+1])+1)*8
		case nhAH:
			if len(b) < off+8 {
				return 0, 0, false, errShort
			}
			proto, off = b[off], off+(int(b[off+1])+2)*4
		case nhFragment6:
			if len(b) < off+8 {
				return 0, 0, false, errShort
			}
			frag := binary.BigEndian.Uint16(b[off+2:off+4])>>3 != 0
			proto, off = b[off], off+8
			if frag {
				return proto, off, true, nil
			}
		default:
			if off > len(b) {
				return 0, 0, false, errShort
			}
			return proto, off, false, nil
		}
	}
	return 0, 0, false, errHeader
}

// parse6 reads an IPv6 header and, past any extension headers, the start
// of its transport header. ICMPv6 is told to the rules as ICMP (the policy
// says "icmp" for both families), with echo types as ICMP's.
func parse6(b []byte) (packet, error) {
	var p packet
	if len(b) < 40 {
		return p, errShort
	}
	if plen := int(binary.BigEndian.Uint16(b[4:6])); plen == 0 && len(b) > 40 {
		return p, errHeader // a jumbogram: nothing the overlay's MTU carries
	} else if 40+plen < len(b) {
		b = b[:40+plen] // ignore padding after the packet
	}
	p.src = netip.AddrFrom16([16]byte(b[8:24]))
	p.dst = netip.AddrFrom16([16]byte(b[24:40]))
	proto, off, frag, err := walk6(b)
	if err != nil {
		return p, err
	}
	p.proto, p.fragment = proto, frag
	if p.proto == protoICMPv6 {
		p.proto, p.icmp6 = protoICMP, true
	}
	if frag {
		return p, nil
	}
	l4 := b[off:]
	switch p.proto {
	case protoTCP, protoUDP:
		if err := p.readPorts(l4); err != nil {
			return p, err
		}
	case protoICMP: // ICMPv6, renamed above
		if len(l4) < 8 {
			return p, errShort
		}
		p.icmpType = icmp6Type(l4[0])
		switch l4[0] {
		case icmp6Echo, icmp6EchoReply:
			id := binary.BigEndian.Uint16(l4[4:6])
			p.srcPort, p.dstPort = id, id
		case icmp6Unreachable, icmp6TooBig, icmp6TimeExceed, icmp6ParamProb:
			if in, err := parseQuoted6(l4[8:]); err == nil {
				p.inner = &in
			}
		}
	}
	return p, nil
}

// icmp6Type maps an ICMPv6 type to the ICMP type of the same meaning, so
// rules and connection keys treat both families alike (0: none).
func icmp6Type(t uint8) uint8 {
	switch t {
	case icmp6Echo:
		return icmpEcho
	case icmp6EchoReply:
		return icmpEchoReply
	case icmp6Unreachable, icmp6TooBig:
		return icmpUnreachable
	case icmp6TimeExceed:
		return icmpTimeExceed
	case icmp6ParamProb:
		return icmpParamProb
	}
	return 0xff
}

// parseQuoted6 reads the IPv6 header, extension headers and first 8
// transport bytes an ICMPv6 error quotes.
func parseQuoted6(b []byte) (packet, error) {
	var p packet
	if len(b) < 40 || b[0]>>4 != 6 {
		return p, errShort
	}
	proto, off, frag, err := walk6(b)
	if err != nil || frag || len(b) < off+8 {
		return p, errHeader
	}
	p.proto = proto
	p.src = netip.AddrFrom16([16]byte(b[8:24]))
	p.dst = netip.AddrFrom16([16]byte(b[24:40]))
	l4 := b[off:]
	switch proto {
	case protoTCP, protoUDP:
		p.srcPort, p.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case protoICMPv6:
		p.proto = protoICMP
		if l4[0] == icmp6Echo || l4[0] == icmp6EchoReply {
			id := binary.BigEndian.Uint16(l4[4:6])
			p.srcPort, p.dstPort = id, id
		}
	}
	return p, nil
}

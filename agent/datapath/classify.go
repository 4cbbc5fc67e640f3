package datapath

import "encoding/binary"

const stunMagicCookie = 0x2112A442

// IsWireGuard and IsSTUN tell WireGuard, STUN and anything else apart.
// WireGuard is tested first because it is the hot path: every WireGuard
// message is at least 32 bytes and starts with a type byte 1..4 followed
// by three reserved zero bytes. A STUN message starts with two zero bits,
// carries the magic cookie at offset 4 and has a length that is a
// multiple of 4 matching the datagram. The two cannot collide: a STUN
// message whose first four bytes look like WireGuard's has a length field
// of zero, so it is 20 bytes long, and WireGuard needs 32.
func IsWireGuard(b []byte) bool {
	return len(b) >= 32 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// IsSTUN: see IsWireGuard.
func IsSTUN(b []byte) bool {
	if len(b) >= 20 && b[0]&0xc0 == 0 &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie {
		n := int(binary.BigEndian.Uint16(b[2:4]))
		return n%4 == 0 && n+20 == len(b)
	}
	return false
}

package agent

import "github.com/meshvpn/meshvpn/agent/datapath"

// packetKind tells what arrived on the shared UDP socket.
type packetKind uint8

const (
	kindOther packetKind = iota
	kindWireGuard
	kindSTUN
	kindBirthday // a birthday punch's reply (birthdaypkt.go)
	kindSync     // a synchronized open's opening packet (syncpkt.go)
)

// classify tells WireGuard and STUN apart as the data path does
// (datapath/classify.go), and the agent's own packets by their fixed
// size and prefix.
func classify(b []byte) packetKind {
	switch {
	case datapath.IsWireGuard(b):
		return kindWireGuard
	case datapath.IsSTUN(b):
		return kindSTUN
	case len(b) == bdayPacketLen && b[0] == 'm' && b[1] == 'v' && b[2] == 'b':
		return kindBirthday
	case len(b) == syncPacketLen && b[0] == 'm' && b[1] == 'v' && b[2] == 's':
		return kindSync
	}
	return kindOther
}

package agent

import (
	"log/slog"
	"net/netip"
	"slices"

	"github.com/pion/ice/v4"
)

// A member chooses its own candidates, and ICE sends connectivity checks
// to every one it is given: without a bound a member names a stranger's
// address on many ports, renews the session every 2 s (peerStartRate),
// and has each agent of the mesh send the stranger STUN requests (1,200 a
// second per agent measured in the lab with 32 such candidates per
// session, e2e TestICEThirdPartyCandidatesBounded). So a session takes
// at most maxForeignCandidates remote addresses that nothing vouches for:
// not where the coordinator sees the peer (seen_from), not a LAN address
// (a peer's host candidates), not a relay of the mesh (a peer's relayed
// address). A real peer has few such addresses (its global IPv6 ones when
// its stream comes over IPv4, a second uplink); ICE pairs the first ones.
const maxForeignCandidates = 4

// admitCandidateLocked tells whether a remote candidate of the current
// session goes to ICE.
func (l *lane) admitCandidateLocked(c ice.Candidate) bool {
	ip, err := netip.ParseAddr(c.Address())
	if err != nil {
		return false // a name: our peers signal addresses
	}
	ip = ip.Unmap()
	if lanAddr(ip) || l.p.seenFromLocked(ip) || l.p.a.relayAddrAllowed(ip) {
		return true
	}
	ap := netip.AddrPortFrom(ip, uint16(c.Port()))
	if slices.Contains(l.foreign, ap) {
		return true
	}
	if len(l.foreign) >= maxForeignCandidates {
		l.p.a.logLimit.Log(l.p.log, slog.LevelInfo, "remote candidate ignored: too many addresses nothing vouches for",
			"lane", l.label(), "max", maxForeignCandidates)
		return false
	}
	l.foreign = append(l.foreign, ap)
	return true
}

// lanAddr: an address a peer's host candidate may have on its LAN.
func lanAddr(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLinkLocalUnicast() || carrierNAT.Contains(ip)
}

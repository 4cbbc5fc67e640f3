package agent

import (
	"time"

	"github.com/meshvpn/meshvpn/netcheck"
)

// Birthday punching joins a symmetric NAT (a fresh public port per
// destination) and a port-restricted one (address-and-port-dependent
// filtering), which no ordinary punch can: the symmetric side's port
// toward the peer is unknown, and the peer's filter drops anything it has
// not sent to.
//
// The symmetric side ("spray") opens birthdaySockets sockets; each sends
// one packet to the easy side's public address with the open TTL
// (hopprobe.go), which passes its own NATs and dies at the next router,
// so every socket holds a mapping toward the peer and the peer's router
// never sees a packet (LAB-NOTES.md, "A routing hop between NATs"). The
// easy side ("probe") then sends probes from its shared socket to random
// ports of the symmetric side's public address; with 256 mappings among
// ~64,000 ports one probe in ~250 lands, and the socket behind it
// answers. That socket carries the peer's WireGuard traffic from then on
// (birthdaypath.go).
//
// Limits (README, "Birthday punching"): the constants below.
const (
	// birthdaySockets: sockets the symmetric side opens per attempt.
	birthdaySockets = 256
	// birthdayProbeRate bounds the easy side's probes per second.
	birthdayProbeRate = 2000
	// birthdayProbeWindow bounds one attempt's probing.
	birthdayProbeWindow = 10 * time.Second
	// birthdayReadyWait: how long the easy side waits for the symmetric
	// side's sockets to be open before it gives the attempt up.
	birthdayReadyWait = 3 * time.Second
	// birthdayRetryMin and birthdayRetryMax bound the backoff between
	// attempts of one peer (doubling from the first).
	birthdayRetryMin = 5 * time.Second
	birthdayRetryMax = 5 * time.Minute
	// birthdayAskGap: the symmetric side opens sockets for one peer at
	// most this often, whatever the peer asks.
	birthdayAskGap = 2 * time.Second
	// birthdayMaxSprays bounds the attempts whose sockets are open at
	// once, over all peers (4 × 256 sockets); a further ask waits.
	birthdayMaxSprays = 4
)

// birthdayRole is a side's part in a birthday punch.
type birthdayRole int

const (
	bdayNone  birthdayRole = iota
	bdaySpray              // symmetric side: opens the sockets
	bdayProbe              // easy side: probes the symmetric side's ports
)

func (r birthdayRole) String() string {
	switch r {
	case bdaySpray:
		return "spray"
	case bdayProbe:
		return "probe"
	}
	return "none"
}

// bdayView is what one side knows of a NAT for the role decision.
type bdayView struct {
	NAT       string // natSymmetric, natPortMapped, natUDPBlocked or ""
	Filtering string // netcheck's verdict
	OpenTTL   int
	Capable   bool // takes part (Signal.Birthday)
}

// decideBirthday says which part this side plays with the peer, and when
// none although one side is symmetric, why (for status). Both sides
// compute it from the same views.
func decideBirthday(self, peer bdayView) (birthdayRole, string) {
	for _, v := range []bdayView{self, peer} {
		if v.NAT == natPortMapped || v.NAT == natUDPBlocked {
			return bdayNone, "" // direct works already, or nothing does
		}
	}
	selfSym, peerSym := self.NAT == natSymmetric, peer.NAT == natSymmetric
	switch {
	case selfSym && peerSym:
		return bdayNone, "" // status says "both behind symmetric NAT"
	case !selfSym && !peerSym:
		return bdayNone, ""
	}
	sym, easy := self, peer
	if peerSym {
		sym, easy = peer, self
	}
	if easy.Filtering != netcheck.AddrPortDependent {
		return bdayNone, "" // an ordinary punch opens the whole address
	}
	switch {
	case !self.Capable || !peer.Capable:
		return bdayNone, "birthday punch: the peer does not take part"
	case sym.OpenTTL == 0:
		return bdayNone, "birthday punch skipped: no router between the symmetric NAT and the internet to stop its opening packets"
	case selfSym:
		return bdaySpray, ""
	}
	return bdayProbe, ""
}

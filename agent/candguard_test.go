package agent

import (
	"fmt"
	"testing"

	"github.com/pion/ice/v4"
)

// A member naming a stranger's address on many ports gets at most
// maxForeignCandidates of them into a session; its LAN, seen_from and
// relay candidates are never counted, and a new session starts afresh.
func TestForeignCandidatesBounded(t *testing.T) {
	p := sharedRelayAgent() // relays at 203.0.113.10 and (relayed) 198.51.100.20
	p.node.SeenFrom = "203.0.113.105"
	l := &lane{p: p}
	admit := func(s string) bool {
		t.Helper()
		c, err := ice.UnmarshalCandidate(s)
		if err != nil {
			t.Fatal(err)
		}
		return l.admitCandidateLocked(c)
	}
	for _, s := range []string{
		"1 1 udp 2130706431 10.2.0.11 41000 typ host",
		"2 1 udp 2130706431 fe80::1 41000 typ host",
		"3 1 udp 1694498815 203.0.113.105 41000 typ srflx raddr 10.2.0.11 rport 41000",
		"4 1 udp 16777215 203.0.113.10 49200 typ relay raddr 203.0.113.105 rport 41000",
		"5 1 udp 16777215 198.51.100.20 50000 typ relay raddr 203.0.113.105 rport 41000",
		"6 1 udp 2130706431 2001:db8:2::11 41000 typ host", // foreign 1
		"7 1 udp 1694498815 2001:db8:2::11 41000 typ srflx raddr 2001:db8:2::11 rport 41000",
	} {
		if !admit(s) {
			t.Errorf("%s refused", s)
		}
	}
	taken := 0
	for port := 9000; port < 9032; port++ {
		if admit(fmt.Sprintf("8 1 udp 1694498815 203.0.113.77 %d typ srflx raddr 10.2.0.11 rport 41000", port)) {
			taken++
		}
	}
	if taken != maxForeignCandidates-1 {
		t.Errorf("32 ports of a stranger named: %d taken, want %d (with the peer's global IPv6 address)", taken, maxForeignCandidates-1)
	}
	if !admit("9 1 udp 1694498815 203.0.113.77 9000 typ srflx raddr 10.2.0.11 rport 41000") {
		t.Error("a foreign address taken before is refused when named again")
	}
}

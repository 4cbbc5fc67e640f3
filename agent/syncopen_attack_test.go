package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/ice/v4"
)

// A member chooses its own candidates. Named as the target of a
// synchronized open, a stranger's address would get this agent's opening
// packets at the agreed instant (syncBurst per open, syncMaxAttempts opens
// each time the member comes online). So the opening packets go only to a
// server-reflexive candidate on the IP the coordinator sees the peer's
// stream come from, as birthday probes do (seenFromLocked): a sync open is
// only ever useful toward the peer's own NAT.
func TestSyncOpenTargetsOnlyWhereCoordinatorSeesPeer(t *testing.T) {
	cand := func(s string) ice.Candidate {
		c, err := ice.UnmarshalCandidate(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	own := netip.MustParseAddrPort("203.0.113.105:41000")
	stranger := netip.MustParseAddrPort("203.0.113.77:9999")
	p := &peer{a: &Agent{}, log: slog.New(slog.DiscardHandler)}
	l := &lane{p: p, holding: true, held: []ice.Candidate{
		cand("1 1 udp 2130706431 10.2.0.11 41000 typ host"),
		cand("2 1 udp 1694498815 203.0.113.105 41000 typ srflx raddr 10.2.0.11 rport 41000"),
		cand("3 1 udp 1694498815 203.0.113.77 9999 typ srflx raddr 10.2.0.11 rport 41000"),
	}}

	p.node.SeenFrom = own.Addr().String()
	got := l.syncTargetsLocked()
	if slices.Contains(got, stranger) {
		t.Errorf("sync-open targets %v include %s, an address the coordinator does not see the peer at", got, stranger)
	}
	if !slices.Equal(got, []netip.AddrPort{own}) {
		t.Errorf("sync-open targets %v, want [%s] (the peer's own public address)", got, own)
	}
	p.node.SeenFrom = ""
	if got := l.syncTargetsLocked(); len(got) != 0 {
		t.Errorf("coordinator says nothing of where it sees the peer: targets %v, want none", got)
	}
	p.node.SeenFrom = "198.51.100.1"
	if got := l.syncTargetsLocked(); len(got) != 0 {
		t.Errorf("coordinator sees the peer elsewhere: targets %v, want none", got)
	}
}

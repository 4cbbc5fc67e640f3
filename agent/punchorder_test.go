package agent

import (
	"testing"

	"github.com/meshvpn/meshvpn/netcheck"
)

// TestDecideOrder checks the punch order for every pair of NAT kinds, as
// the filtering probe reports them, from both sides: the two sides must
// agree (one first and one waiting, or both together), and a side that
// lets a contacted address in on any port (full and restricted cone, a
// port mapping) goes first against one that filters by address and port
// (port-restricted, double NAT, symmetric). Between two of the latter, a
// side with an opening TTL opens with low-TTL packets (the controlling
// one when both have one) and the other waits.
func TestDecideOrder(t *testing.T) {
	kinds := []struct {
		name string
		view natView
		// opener: lets the whole address in once it has sent there.
		opener, known bool
	}{
		{"fullcone", natView{Filtering: netcheck.EndpointIndependent}, true, true},
		{"restrictedcone", natView{Filtering: netcheck.AddressDependent}, true, true},
		{"portrestricted", natView{Filtering: netcheck.AddrPortDependent}, false, true},
		{"doublenat", natView{Filtering: netcheck.AddrPortDependent}, false, true},
		{"symmetric", natView{Filtering: netcheck.AddrPortDependent}, false, true},
		{"symmetric+portmap", natView{Filtering: netcheck.AddrPortDependent, PortMapped: true}, true, true},
		{"portrestricted behind an ISP hop", natView{Filtering: netcheck.AddrPortDependent, OpenTTL: 2}, false, true},
		{"doublenat behind an ISP hop", natView{Filtering: netcheck.AddrPortDependent, OpenTTL: 3}, false, true},
		{"restrictedcone behind an ISP hop", natView{Filtering: netcheck.AddressDependent, OpenTTL: 2}, true, true},
		{"udpblocked", natView{Filtering: netcheck.Unknown}, false, false},
		{"not probed yet", natView{}, false, false},
	}
	for _, a := range kinds {
		for _, b := range kinds {
			ab, ba := decideOrder(a.view, b.view, true), decideOrder(b.view, a.view, false)
			want := orderTogether
			switch {
			case !a.known || !b.known:
			case a.opener && !b.opener:
				want = orderFirst
			case !a.opener && b.opener:
				want = orderWait
			case a.opener && b.opener:
			case a.view.OpenTTL > 0: // a controls: it opens on a tie
				want = orderOpenLow
			case b.view.OpenTTL > 0:
				want = orderWait
			}
			if ab != want {
				t.Errorf("%s vs %s: %v, want %v", a.name, b.name, ab, want)
			}
			agree := (ab == orderTogether && ba == orderTogether) ||
				(ab == orderFirst && ba == orderWait) || (ab == orderWait && ba == orderFirst) ||
				(ab == orderOpenLow && ba == orderWait) || (ab == orderWait && ba == orderOpenLow)
			if !agree {
				t.Errorf("%s vs %s: the sides disagree: %v and %v", a.name, b.name, ab, ba)
			}
		}
	}
}

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestPunchLowTTL joins two port-restricted sites whose routers accept
// input, one behind an ISP routing hop. Whichever full-TTL check reaches
// the other router first leaves a stale conntrack entry there and moves
// that host's mapping, so checking at once (or in either order) never
// connects. The hopped side opens its NAT with packets that die at its
// ISP hop, and the other side's checks then get in: both must report a
// direct path within 3 s of seeing each other online.
func TestPunchLowTTL(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	flat, err := lab.AddSiteSpec("flat", natlab.SiteSpec{Kind: natlab.PortRestricted, Variant: natlab.InputAccept})
	if err != nil {
		t.Fatal(err)
	}
	hopped, err := lab.AddSiteSpec("hopped", natlab.SiteSpec{Kind: natlab.PortRestricted, Variant: natlab.InputAccept, ISPHop: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, flat.Host, "flat")
	if err != nil {
		t.Fatal(err)
	}
	b, err := meshlab.NewAgent(coord, hopped.Host, "hopped")
	if err != nil {
		t.Fatal(err)
	}
	startOnline(t, key, a, b)
	for _, side := range []struct{ from, to *meshlab.Agent }{{a, b}, {b, a}} {
		p, err := meshlab.WaitPath(t.Context(), side.from, side.to.Name, "direct", 15*time.Second)
		if err != nil {
			t.Fatalf("%s -> %s: %v", side.from.Name, side.to.Name, err)
		}
		t.Logf("%s -> %s: direct after %d ms, local=%s remote=%s endpoint=%s", side.from.Name, side.to.Name, p.DirectAfterMs, p.LocalType, p.RemoteType, p.Endpoint)
		if p.DirectAfterMs > 3000 {
			t.Errorf("%s -> %s: direct after %d ms, want within 3 s of the peer being online", side.from.Name, side.to.Name, p.DirectAfterMs)
		}
	}
	if !strings.Contains(b.Proc.Log(), "opening our NAT with low-TTL packets") {
		t.Error("the hopped agent's log does not show low-TTL opening packets")
	}
	if out, err := pingUntil(t.Context(), a, overlayIP(t, b), 10*time.Second); err != nil {
		t.Fatalf("overlay ping: %v\n%s", err, out)
	}
}

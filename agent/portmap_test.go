package agent

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/portmap"
)

// The signalled candidate must parse on the peer's side as a srflx
// candidate at the mapped address, ranked between host and srflx, and be
// recognisable as port-mapped.
func TestPortmapCandidate(t *testing.T) {
	a := &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, ok := a.portmapCandidate(); ok {
		t.Fatal("candidate offered without a port mapper")
	}
	pm := &portMapper{a: a, client: portmap.NewClient(portmap.Config{})}
	a.portmap.Store(pm)
	if _, ok := a.portmapCandidate(); ok {
		t.Fatal("candidate offered without a mapping")
	}
	pm.cur = portmap.Mapping{Protocol: portmap.PCP, External: netip.MustParseAddrPort("203.0.113.101:40001"), InternalPort: 41641, Lease: time.Hour, Obtained: time.Now()}
	pm.have = true
	s, ok := a.portmapCandidate()
	if !ok {
		t.Fatal("no candidate for a mapping")
	}
	c, err := ice.UnmarshalCandidate(s)
	if err != nil {
		t.Fatalf("peer cannot parse %q: %v", s, err)
	}
	if c.Address() != "203.0.113.101" || c.Port() != 40001 || c.Type() != ice.CandidateTypeServerReflexive {
		t.Errorf("candidate %q parses as %v", s, c)
	}
	if got := candidateLabel(c); got != "portmap" {
		t.Errorf("label %q, want portmap", got)
	}
	host := uint32(126<<24 | 65535<<8 | 255)
	srflx := uint32(100<<24 | 65535<<8 | 255)
	if c.Priority() <= srflx || c.Priority() >= host {
		t.Errorf("priority %d not between srflx %d and host %d", c.Priority(), srflx, host)
	}
	// An expired lease is not offered.
	pm.cur.Obtained = time.Now().Add(-2 * time.Hour)
	if _, ok := a.portmapCandidate(); ok {
		t.Error("candidate offered for an expired mapping")
	}
	st := a.portmapStatus()
	if st == nil || st.Protocol != "" {
		t.Errorf("status of an expired mapping: %+v", st)
	}
}

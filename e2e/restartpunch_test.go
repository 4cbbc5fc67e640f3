package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestRestartOnePunch restarts one agent of a mesh whose pairs need a
// synchronized open (port-restricted and double-NAT sites, routers that
// accept input or drop it, 5-7 ms from the bridge; see TestSyncOpen),
// first one behind a router that accepts input, then one behind a router
// that drops it. Its peers must not decide the punch order from the NAT
// views of its previous run before it has measured its NAT again (its
// checks then reach a router that accepts input first, and the pair waits
// out the stale entries: 46 s seen in the lab): every pair of the
// restarted agent must go direct by a synchronized open within 3 s of
// each side seeing the other online, as at a cold start of both.
func TestRestartOnePunch(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	var agents []*meshlab.Agent
	for _, sp := range syncOpenSpots() {
		s, err := lab.AddSiteSpec(sp.name, natlab.SiteSpec{Kind: sp.kind, Variant: *sp.variant, WANDelay: sp.wan})
		if err != nil {
			t.Fatal(err)
		}
		a, err := meshlab.NewAgent(coord, s.Host, sp.name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	startOnline(t, key, agents...)
	for i, a := range agents {
		for _, b := range agents[i+1:] {
			for _, s := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
				if _, err := waitDirectSince(t, s[0], s[1].Name, 30*time.Second, time.Time{}, syncChange); err != nil {
					t.Fatalf("cold start: %s -> %s: %v", s[0].Name, s[1].Name, err)
				}
			}
		}
	}

	for _, name := range []string{"dn-accept", "pr-drop"} {
		t.Run("restart "+name, func(t *testing.T) {
			var r *meshlab.Agent
			for _, a := range agents {
				if a.Name == name {
					r = a
				}
			}
			if err := r.Stop(15 * time.Second); err != nil {
				t.Fatalf("stop %s: %v", name, err)
			}
			// Let every peer see it offline, as after a reboot.
			time.Sleep(2 * time.Second)
			restart := time.Now()
			if err := r.Start(""); err != nil {
				t.Fatalf("restart %s: %v", name, err)
			}
			var b strings.Builder
			for _, o := range agents {
				if o == r {
					continue
				}
				for _, s := range [][2]*meshlab.Agent{{r, o}, {o, r}} {
					from, to := s[0], s[1].Name
					last, err := waitDirectSince(t, from, to, 60*time.Second, restart, syncChange)
					if err != nil {
						t.Errorf("%s -> %s after %s restarted: %v", from.Name, to, name, err)
						continue
					}
					fmt.Fprintf(&b, "\n  %s -> %s: direct after %d ms (%v after the restart): %s",
						from.Name, to, last.DirectAfterMs, time.Since(restart).Round(100*time.Millisecond), last.LastChange)
					if last.DirectAfterMs > 3000 {
						t.Errorf("%s -> %s after %s restarted: direct after %d ms, want within 3 s of the peer being online",
							from.Name, to, name, last.DirectAfterMs)
					}
				}
			}
			t.Logf("%s restarted:%s", name, b.String())
		})
	}
}

// syncChange is how last_change names a path a synchronized open found.
const syncChange = "direct after synchronized open"

// waitDirectSince waits until from shows to direct, with last_change
// naming change and the path changed at or after since (a whole second:
// status rounds changed_at down to one).
func waitDirectSince(t *testing.T, from *meshlab.Agent, to string, timeout time.Duration, since time.Time, change string) (*meshlab.PeerStatus, error) {
	return meshlab.WaitPeer(t.Context(), from, to, timeout, func(p *meshlab.PeerStatus) error {
		if p.Path != "direct" || p.DirectAfterMs == 0 || !strings.Contains(p.LastChange, change) {
			return fmt.Errorf("path %s, direct after %d ms, last_change %q", p.Path, p.DirectAfterMs, p.LastChange)
		}
		if !since.IsZero() {
			at, err := time.Parse(time.RFC3339, p.ChangedAt)
			if err != nil || at.Before(since.Truncate(time.Second)) {
				return fmt.Errorf("path %s changed at %q, before the restart", p.Path, p.ChangedAt)
			}
		}
		return nil
	})
}

// TestRestartOnePunchLowTTL restarts each side of TestPunchLowTTL's pair
// (port-restricted sites on routers that accept input, one behind an ISP
// hop, which opens with low-TTL packets) in turn: the pair must go direct
// within 3 s of each side seeing the other online again.
func TestRestartOnePunchLowTTL(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	var agents []*meshlab.Agent
	for _, hop := range []bool{false, true} {
		name := map[bool]string{false: "flat", true: "hopped"}[hop]
		s, err := lab.AddSiteSpec(name, natlab.SiteSpec{Kind: natlab.PortRestricted, Variant: natlab.InputAccept, ISPHop: hop})
		if err != nil {
			t.Fatal(err)
		}
		a, err := meshlab.NewAgent(coord, s.Host, name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	startOnline(t, key, agents...)
	for _, s := range [][2]*meshlab.Agent{{agents[0], agents[1]}, {agents[1], agents[0]}} {
		if _, err := waitDirectSince(t, s[0], s[1].Name, 30*time.Second, time.Time{}, ""); err != nil {
			t.Fatalf("cold start: %s -> %s: %v", s[0].Name, s[1].Name, err)
		}
	}
	for _, r := range []*meshlab.Agent{agents[1], agents[0]} {
		if err := r.Stop(15 * time.Second); err != nil {
			t.Fatalf("stop %s: %v", r.Name, err)
		}
		time.Sleep(2 * time.Second) // the peer sees it offline
		restart := time.Now()
		if err := r.Start(""); err != nil {
			t.Fatalf("restart %s: %v", r.Name, err)
		}
		for _, s := range [][2]*meshlab.Agent{{agents[0], agents[1]}, {agents[1], agents[0]}} {
			last, err := waitDirectSince(t, s[0], s[1].Name, 60*time.Second, restart, "")
			if err != nil {
				t.Errorf("%s -> %s after %s restarted: %v", s[0].Name, s[1].Name, r.Name, err)
				continue
			}
			t.Logf("%s restarted: %s -> %s: direct after %d ms (%v after the restart): %s", r.Name, s[0].Name, s[1].Name,
				last.DirectAfterMs, time.Since(restart).Round(100*time.Millisecond), last.LastChange)
			if last.DirectAfterMs > 3000 {
				t.Errorf("%s -> %s after %s restarted: direct after %d ms, want within 3 s of the peer being online",
					s[0].Name, s[1].Name, r.Name, last.DirectAfterMs)
			}
		}
	}
}

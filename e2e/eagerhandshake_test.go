package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// wireguard-go's lines (debug, but for noEndpointLine) for a handshake
// initiation from a key it has no peer for (dropped), and for one it tried
// to send to a peer with no endpoint yet.
const (
	unknownPeerLine = "Received invalid initiation message"
	noEndpointLine  = "no known endpoint for peer"
	// crossedLine: a response to an initiation superseded by one of our
	// own, as when both sides initiate at once.
	crossedLine = "Received invalid response message"
)

// TestEagerFirstHandshake: two eager agents (--lazy-peers off) started
// together, each pinging the other from the moment it has its overlay
// address. The controlling side's first WireGuard handshake must reach a
// controlled side that already knows the peer: wireguard-go drops one for
// a peer it does not have yet. The first packets then wait for the
// handshake retry (handshakeGrace, 400 ms, and a recreated peer), or for a
// handshake the controlled side starts itself, which the design leaves to
// the controlling side (see applyPath).
// And the controlled side's early WireGuard peer must not make
// wireguard-go try handshakes towards no endpoint while the pings hit it.
// Run it with -count=N to see the race's rate.
func TestEagerFirstHandshake(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	a := addSiteAgent(t, lab, coord, "ega", natlab.PortRestricted)
	b := addSiteAgent(t, lab, coord, "egb", natlab.PortRestricted)
	for _, x := range []*meshlab.Agent{a, b} {
		// --verbose: the retry line and wireguard-go's handshake lines
		// are debug lines.
		x.ExtraArgs = append(x.ExtraArgs, "--lazy-peers", "off", "--verbose")
	}
	startOnline(t, key, a, b)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, x := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
		ip := overlayIP(t, x[1])
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Errors expected until the path is up; bounded by -c.
			_, _ = x[0].Host.Run(ctx, "ping", "-n", "-q", "-c", "30", "-i", "0.1", "-W", "1", ip)
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	for _, x := range [][2]*meshlab.Agent{{a, b}, {b, a}} {
		p, err := meshlab.WaitPath(t.Context(), x[0], x[1].Name, "direct", 20*time.Second)
		if err != nil {
			t.Fatalf("%s → %s: %v", x[0].Name, x[1].Name, err)
		}
		t.Logf("%s → %s: %s %s→%s, set up in %d ms", x[0].Name, x[1].Name, p.Path, p.LocalType, p.RemoteType, p.DirectAfterMs)
	}
	// Past handshakeGrace on the controlling side, with pings still
	// going both ways.
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	// Both sides initiating at once (the controlled side's own ping
	// reaching WireGuard in the millisecond between its path going in and
	// the controlling side's initiation arriving: about one start in 30
	// here) also costs the retry; that is another race (applyPath), not
	// this one: logged, not failed.
	crossed := strings.Contains(a.Proc.Log(), crossedLine) && strings.Contains(b.Proc.Log(), crossedLine)
	for _, x := range []*meshlab.Agent{a, b} {
		log := x.Proc.Log()
		t.Logf("%s: %d handshake initiations sent, %d received, %d from an unknown peer, %d towards no endpoint, crossed %v",
			x.Name, strings.Count(log, "Sending handshake initiation"), strings.Count(log, "Received handshake initiation"),
			strings.Count(log, unknownPeerLine), strings.Count(log, noEndpointLine), crossed)
		if strings.Contains(log, unknownPeerLine) {
			t.Errorf("%s: dropped a handshake initiation from a peer WireGuard did not have yet (%q in its log)", x.Name, unknownPeerLine)
		}
		if strings.Contains(log, handshakeRetryLine) && crossed {
			t.Logf("%s: handshake retry after crossed initiations (%q in both logs)", x.Name, crossedLine)
		} else if strings.Contains(log, handshakeRetryLine) {
			t.Errorf("%s: the first WireGuard handshake was lost and the peer recreated (%q in its log)", x.Name, handshakeRetryLine)
		}
		if strings.Contains(log, noEndpointLine) {
			t.Errorf("%s: wireguard-go tried a handshake towards no endpoint (%q in its log)", x.Name, noEndpointLine)
		}
	}
}

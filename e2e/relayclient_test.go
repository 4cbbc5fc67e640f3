package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestSharedRelayOneAllocationPerAgent: four agents behind symmetric NATs,
// every pair relayed through the embedded relay, with
// --relay-client=shared. The relay holds one allocation per agent, not one
// per relayed pair and side (12 with per-peer sessions): counted from the
// relay's own sockets (one UDP socket per allocation in its relay range).
func TestSharedRelayOneAllocationPerAgent(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	key := authKey(t, coord, true)
	const n = 4
	agents := make([]*meshlab.Agent, n)
	for i := range agents {
		agents[i] = addSiteAgent(t, lab, coord, fmt.Sprintf("sh%d", i+1), natlab.Symmetric)
		agents[i].ExtraArgs = append(agents[i].ExtraArgs, "--relay-client=shared")
		if err := agents[i].Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range agents {
		seen := map[string]bool{}
		for j, b := range agents {
			if i == j {
				continue
			}
			if out, err := pingUntil(ctx, a, overlayIP(t, b), 40*time.Second); err != nil {
				t.Fatalf("%s -> %s: %v\n%s", a.Name, b.Name, err, out)
			}
			p, err := meshlab.WaitPath(ctx, a, b.Name, "relay", 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if p.Relay == nil || p.Relay.Allocation == "" {
				t.Fatalf("%s -> %s: relayed path without an allocation: %+v", a.Name, b.Name, p)
			}
			seen[p.Relay.Allocation] = true
		}
		if len(seen) != 1 {
			t.Errorf("%s relays to its %d peers through allocations %v, want one", a.Name, n-1, seen)
		}
	}
	// Probe allocations come and go within a second; count a settled view.
	var allocs int
	if err := natlab.Poll(ctx, 10*time.Second, 500*time.Millisecond, func() error {
		out, err := coord.Host.Run(ctx, "ss", "-Huan")
		if err != nil {
			return err
		}
		allocs = relaySockets(out)
		if allocs != n {
			return fmt.Errorf("relay holds %d allocations for %d agents with %d relayed pairs, want %d:\n%s", allocs, n, n*(n-1)/2, n, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("relay allocations: %d for %d agents, %d relayed pairs", allocs, n, n*(n-1)/2)
}

// relaySockets counts the UDP sockets in the embedded relay's default
// range (49152-65535) in `ss -Huan` output.
func relaySockets(ss string) int {
	count := 0
	for _, line := range strings.Split(ss, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local := f[3]
		if len(f) >= 5 && !strings.Contains(f[3], ":") {
			local = f[4]
		}
		i := strings.LastIndex(local, ":")
		if i < 0 {
			continue
		}
		if port, err := strconv.Atoi(local[i+1:]); err == nil && port >= 49152 {
			count++
		}
	}
	return count
}

// TestSharedRelayOverStream: a site that blocks UDP reaches three peers
// through the shared relay client over a stream - TCP to the embedded
// relay, TLS to it (TCP 3478 blocked too, so only turns: on 443 is left),
// TCP to coturn - and holds ONE allocation on the relay for all of them,
// as the relay's own sockets say: one stream from that agent on the relay
// port, and one relay socket per agent of the mesh (per-peer sessions
// would hold three of each for it).
func TestSharedRelayOverStream(t *testing.T) {
	withCoturn := func(ctx context.Context, lab *natlab.Lab, bins meshlab.Bins) (*meshlab.Coordinator, error) {
		turn, err := meshlab.StartCoturn(ctx, lab)
		if err != nil {
			return nil, err
		}
		return meshlab.StartCoordinatorWith(ctx, lab, bins, meshlab.CoordinatorOptions{Args: turn.CoordinatorArgs()})
	}
	for _, c := range []struct {
		name, transport string
		start           func(context.Context, *natlab.Lab, meshlab.Bins) (*meshlab.Coordinator, error)
		relayIP, port   string
		perPeer         bool // the UDP-blocked agent runs --relay-client=per-peer
	}{
		{"tcp-embedded", "tcp", meshlab.StartCoordinator, meshlab.CoordinatorIP, "3478", false},
		{"tls-embedded", "tls", meshlab.StartCoordinatorTLS, meshlab.CoordinatorIP, "443", false},
		{"tcp-coturn", "tcp", withCoturn, meshlab.CoturnIP, "3478", false},
		// per-peer mode still works, beside peers on the shared client.
		{"tcp-embedded-per-peer", "tcp", meshlab.StartCoordinator, meshlab.CoordinatorIP, "3478", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			lab, coord := newLabWith(t, c.start)
			ctx := t.Context()
			key := authKey(t, coord, true)
			site, err := lab.AddSite("ub", natlab.UDPBlocked)
			if err != nil {
				t.Fatal(err)
			}
			if c.transport == "tls" {
				if _, err := site.Router.Run(ctx, "nft", "add", "rule", "ip", "natlab", "forward", "tcp", "dport", "3478", "drop"); err != nil {
					t.Fatal(err)
				}
			}
			ub, err := meshlab.NewAgent(coord, site.Host, "ub")
			if err != nil {
				t.Fatal(err)
			}
			if c.perPeer {
				ub.ExtraArgs = append(ub.ExtraArgs, "--relay-client=per-peer")
			}
			peers := []*meshlab.Agent{
				addSiteAgent(t, lab, coord, "sym1", natlab.Symmetric),
				addSiteAgent(t, lab, coord, "sym2", natlab.Symmetric),
				addSiteAgent(t, lab, coord, "fc1", natlab.FullCone),
			}
			startOnline(t, key, append([]*meshlab.Agent{ub}, peers...)...)
			seen := map[string]bool{}
			for _, b := range peers {
				if out, err := pingUntil(ctx, ub, overlayIP(t, b), 40*time.Second); err != nil {
					t.Fatalf("ub -> %s: %v\n%s", b.Name, err, out)
				}
				checkRelayed(t, ub, b, c.transport, c.relayIP)
				p, err := meshlab.WaitPath(ctx, ub, b.Name, "relay", 20*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if p.Relay == nil || p.Relay.Allocation == "" {
					t.Fatalf("ub -> %s: relayed path without an allocation: %+v", b.Name, p)
				}
				if c.perPeer {
					if p.LocalType != "relay" {
						t.Errorf("ub -> %s: per-peer mode, but the path is not on a relay session (local %q, relay lane %q)", b.Name, p.LocalType, p.RelayICEState)
					}
					continue
				}
				if p.RelayICEState != "shared channel" {
					t.Errorf("ub -> %s: relayed path not on the shared client (relay lane %q)", b.Name, p.RelayICEState)
				}
				seen[p.Relay.Allocation] = true
			}
			if c.perPeer {
				return
			}
			if len(seen) != 1 {
				t.Errorf("ub relays to its %d peers through allocations %v, want one", len(peers), seen)
			}
			relayHost := coord.Host
			if c.relayIP != meshlab.CoordinatorIP {
				relayHost = lab.Host("turn")
			}
			// Probes come and go within a second; count a settled view.
			var allocs, streams int
			err = natlab.Poll(ctx, 15*time.Second, 500*time.Millisecond, func() error {
				udp, err := relayHost.Run(ctx, "ss", "-Huan")
				if err != nil {
					return err
				}
				tcp, err := relayHost.Run(ctx, "ss", "-Htn", "state", "established")
				if err != nil {
					return err
				}
				allocs, streams = relaySockets(udp), relayStreams(tcp, c.relayIP+":"+c.port)
				if allocs != 1+len(peers) || streams != 1 {
					return fmt.Errorf("relay holds %d allocations for %d agents and %d streams from the UDP-blocked one, want %d and 1:\n%s\n%s",
						allocs, 1+len(peers), streams, 1+len(peers), udp, tcp)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("relay %s: %d allocations for %d agents; the UDP-blocked agent: one %s stream, one allocation, %d relayed peers", c.name, allocs, 1+len(peers), c.transport, len(peers))
			if c.name == "tcp-embedded" {
				cutStream(t, site.Router, ub, peers[0], c.port, seen)
			}
		})
	}
}

// cutStream resets the UDP-blocked agent's stream to the relay at its
// router (TCP resets for a few seconds): the agent drops the stream, makes
// a new allocation, announces it, and reaches peer through it again.
func cutStream(t *testing.T, router *natlab.Host, ub, peer *meshlab.Agent, port string, old map[string]bool) {
	ctx := t.Context()
	for _, args := range [][]string{
		{"add", "table", "ip", "cut"},
		{"add", "chain", "ip", "cut", "f", "{", "type", "filter", "hook", "forward", "priority", "0", ";", "}"},
		{"add", "rule", "ip", "cut", "f", "tcp", "dport", port, "reject", "with", "tcp", "reset"},
	} {
		if out, err := router.Run(ctx, "nft", args...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	cut := time.Now()
	_, _ = meshlab.PingIP(ctx, ub, overlayIP(t, peer), 3) // WireGuard writes into the cut stream
	if out, err := router.Run(ctx, "nft", "delete", "table", "ip", "cut"); err != nil {
		t.Fatalf("nft delete: %v\n%s", err, out)
	}
	healed := time.Now()
	// A new stream and allocation within a second or two, the peers told
	// through the coordinator, a channel bound each way.
	if out, err := pingUntil(ctx, ub, overlayIP(t, peer), 10*time.Second); err != nil {
		t.Fatalf("ub -> %s not back within 10 s of the cut's end: %v\n%s", peer.Name, err, out)
	}
	t.Logf("ub reaches %s again %v after the cut's end (%v cut)", peer.Name, time.Since(healed).Round(100*time.Millisecond), healed.Sub(cut).Round(100*time.Millisecond))
	p, err := meshlab.WaitPath(ctx, ub, peer.Name, "relay", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Relay == nil || old[p.Relay.Allocation] || p.RelayICEState != "shared channel" {
		t.Errorf("after the cut: relay %+v (lane %q), want a new allocation on the shared client (old %v)", p.Relay, p.RelayICEState, old)
	}
	if !strings.Contains(ub.Proc.Log(), "relay stream lost") {
		t.Error("the agent did not log that it lost its relay stream")
	}
}

// relayStreams counts the established connections to local in `ss -Htn
// state established` output.
func relayStreams(ss, local string) int {
	count := 0
	for _, line := range strings.Split(ss, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == local {
			count++
		}
	}
	return count
}

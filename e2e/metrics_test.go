package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// scrapeAgent fetches an agent's /metrics from inside its namespace (the
// endpoint listens on the namespace's loopback).
func scrapeAgent(ctx context.Context, a *meshlab.Agent, addr string) (map[string]float64, error) {
	out, err := a.Host.Run(ctx, "curl", "-sS", "--max-time", "5", "http://"+addr+metrics.Path)
	if err != nil {
		return nil, err
	}
	return metrics.Parse(strings.NewReader(out))
}

// peerSample is the value of metric name for the peer called peer, or -1
// when there is none.
func peerSample(m map[string]float64, name, peer string) float64 {
	for k, v := range m {
		if strings.HasPrefix(k, name+"{") && strings.Contains(k, `peer="`+peer+`"`) {
			return v
		}
	}
	return -1
}

// TestAgentMetrics runs two real agents with --metrics-listen and checks
// the per-peer samples follow the tunnel: a direct path, and byte counters
// and a handshake age that appear and grow once traffic flows.
func TestAgentMetrics(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	const addr = "127.0.0.1:9101"
	a := addSiteAgent(t, lab, coord, "ma", natlab.None)
	b := addSiteAgent(t, lab, coord, "mb", natlab.None)
	for _, x := range []*meshlab.Agent{a, b} {
		x.ExtraArgs = []string{"--metrics-listen", addr}
		if err := x.Start(key); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{a, b}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ipB := overlayIP(t, b)

	if out, err := pingUntil(ctx, a, ipB, 30*time.Second); err != nil {
		t.Fatalf("overlay ping: %v\n%s", err, out)
	}
	if _, err := meshlab.WaitPath(ctx, a, "mb", "direct", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var first map[string]float64
	err := natlab.Poll(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		m, err := scrapeAgent(ctx, a, addr)
		if err != nil {
			return err
		}
		first = m
		if m[`meshvpn_agent_peers{path="direct"}`] != 1 || peerSample(m, "meshvpn_agent_peer_direct", "mb") != 1 {
			return fmt.Errorf("peers by path: %v", m)
		}
		if peerSample(m, "meshvpn_agent_peer_rx_bytes_total", "mb") <= 0 || peerSample(m, "meshvpn_agent_peer_tx_bytes_total", "mb") <= 0 {
			return fmt.Errorf("no bytes counted for mb: %v", m)
		}
		if age := peerSample(m, "meshvpn_agent_peer_handshake_age_seconds", "mb"); age < 0 || age > 180 {
			return fmt.Errorf("handshake age for mb: %v", age)
		}
		if m["meshvpn_agent_coordinator_connected"] != 1 {
			return fmt.Errorf("coordinator not connected")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("first scrape: %v", err)
	}

	// More traffic: the counters grow.
	if out, err := meshlab.PingIP(ctx, a, ipB, 5); err != nil {
		t.Fatalf("overlay ping: %v\n%s", err, out)
	}
	err = natlab.Poll(ctx, 10*time.Second, 600*time.Millisecond, func() error {
		m, err := scrapeAgent(ctx, a, addr)
		if err != nil {
			return err
		}
		for _, k := range []string{"meshvpn_agent_peer_rx_bytes_total", "meshvpn_agent_peer_tx_bytes_total"} {
			if now, before := peerSample(m, k, "mb"), peerSample(first, k, "mb"); now <= before {
				return fmt.Errorf("%s stayed at %v", k, now)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/agent"
)

// A relayed peer's path names the relay, its transport and the node that
// runs it when it is a peer relay; the relay list marks the chosen one.
func TestPrintStatusPeerRelay(t *testing.T) {
	st := &agent.Status{
		Self: agent.SelfStatus{Name: "laptop", IP: "100.64.0.1", TUN: "meshvpn0", Relays: []agent.RelayStatus{
			{URL: "turn:203.0.113.60:3478?transport=udp", Server: "203.0.113.60:3478", Transport: "udp", Available: true, RTTMs: 1.5, Node: 7, Chosen: true},
			{URL: "turn:203.0.113.10:3478?transport=udp", Server: "203.0.113.10:3478", Transport: "udp", Available: true, RTTMs: 40},
		}},
		Peers: []agent.PeerStatus{
			{ID: 7, Name: "relayhost", IP: "100.64.0.7", Path: agent.PathDirect},
			{ID: 9, Name: "server", IP: "100.64.0.9", Path: agent.PathRelay,
				Relay: &agent.RelayPathStatus{Server: "203.0.113.60:3478", Transport: "udp", Node: 7}},
		},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{
		"relay 203.0.113.60:3478         udp available, 1.5ms, chosen (peer relay relayhost)",
		"relay 203.0.113.10:3478         udp available, 40.0ms\n",
		"relay via 203.0.113.60:3478 udp (peer relay relayhost)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/agent"
)

// The status table names each peer's DNS name and the DNS mode.
func TestPrintStatusDNS(t *testing.T) {
	st := &agent.Status{
		Self: agent.SelfStatus{Name: "laptop", IP: "100.64.0.1", TUN: "meshvpn0",
			DNS: &agent.DNSStatus{Domain: "mesh.internal", Resolver: "100.100.100.100", Mode: "resolved"}},
		Peers: []agent.PeerStatus{{Name: "server", DNSName: "server.mesh.internal", IP: "100.64.0.2", Path: agent.PathNone}},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{"dns: mesh.internal on 100.100.100.100, host DNS resolved", "DNS NAME", "server.mesh.internal"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// The status table shows both overlay addresses.
func TestPrintStatusIPv6(t *testing.T) {
	st := &agent.Status{
		Self:  agent.SelfStatus{Name: "laptop", IP: "100.64.0.1", IP6: "fd12:3456:789a::6440:1", TUN: "meshvpn0"},
		Peers: []agent.PeerStatus{{Name: "server", IP: "100.64.0.2", IP6: "fd12:3456:789a::6440:2", Path: agent.PathNone}, {Name: "old", IP: "100.64.0.3", Path: agent.PathNone}},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{"self: laptop 100.64.0.1 fd12:3456:789a::6440:1", "IPV6", "fd12:3456:789a::6440:2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

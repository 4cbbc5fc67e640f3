package agent

import (
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestRelayChoiceByRTT: relay sessions go to the working relay with the
// shortest measured round trip over the preferred transport, not to the
// first one listed. Before the choice looked at RTT it took the first:
// "chose far, want near".
func TestRelayChoiceByRTT(t *testing.T) {
	check := func(url, tr string, ok bool, rtt time.Duration) relayCheck {
		return relayCheck{relayTarget: relayTarget{Relay: control.Relay{URL: url}, Transport: tr}, OK: ok, RTT: rtt}
	}
	m := &relayManager{checks: []relayCheck{
		check("far", "udp", true, 40*time.Millisecond),
		check("near", "udp", true, 5*time.Millisecond),
		check("nearest-tcp", "tcp", true, time.Millisecond),
		check("down", "udp", false, 0),
	}}
	if c := m.choice(); c == nil || c.URL != "near" {
		t.Fatalf("chose %v, want near", c)
	}
	m.checks[1].OK = false
	if c := m.choice(); c == nil || c.URL != "far" {
		t.Fatalf("with near down chose %v, want far", c)
	}
	m.checks[0].OK = false
	if c := m.choice(); c == nil || c.URL != "nearest-tcp" {
		t.Fatalf("with UDP down chose %v, want nearest-tcp", c)
	}
}

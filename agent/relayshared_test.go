package agent

import "testing"

// An IPv6-only host's relay is an IPv6 server; the shared client's socket
// is IPv4, so such a relay must stay with the per-peer sessions (seen in
// TestIPv6OnlyToIPv4OnlyRelay: "resolve relay [2001:db8::…]:3478: no
// suitable address found" every second, and no relayed path).
func TestSharedRelayFits(t *testing.T) {
	for _, c := range []struct {
		t    *relayTarget
		want bool
	}{
		{nil, false},
		{&relayTarget{Server: "203.0.113.10:3478", Transport: "udp"}, true},
		{&relayTarget{Server: "203.0.113.10:3478", Transport: "tcp"}, true},
		{&relayTarget{Server: "203.0.113.10:443", Transport: "tls"}, true},
		{&relayTarget{Server: "203.0.113.10:3478", Transport: "dtls"}, false},
		{&relayTarget{Server: "[2001:db8::10]:3478", Transport: "tcp"}, false},
		{&relayTarget{Server: "[2001:db8::10]:3478", Transport: "udp"}, false},
		{&relayTarget{Server: "[::ffff:203.0.113.10]:3478", Transport: "udp"}, true},
		{&relayTarget{Server: "relay.example:3478", Transport: "udp"}, true},
	} {
		if got := sharedRelayFits(c.t); got != c.want {
			t.Errorf("sharedRelayFits(%+v) = %v, want %v", c.t, got, c.want)
		}
	}
}

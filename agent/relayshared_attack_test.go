package agent

import (
	"log/slog"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// sharedRelayAgent is an agent in shared relay mode whose relay list holds
// the embedded relay at 203.0.113.10 and a hosted TURN service by name
// whose probe allocation came from 198.51.100.20, and no allocation of its
// own yet: a relayed address a peer announces is taken, but no channel is
// bound.
func sharedRelayAgent() *peer {
	a := &Agent{cfg: Config{RelayClient: RelayClientShared}, log: slog.New(slog.DiscardHandler), logLimit: logsafe.NewLimiter(10, time.Minute)}
	a.relays = &relayManager{a: a}
	a.shared = &sharedRelay{a: a}
	for _, r := range []struct{ url, relayed string }{
		{"turn:203.0.113.10:3478?transport=udp", "203.0.113.10"},
		{"turn:turn.example.net:3478?transport=udp", "198.51.100.20"},
	} {
		t, err := parseRelay(control.Relay{URL: r.url})
		if err != nil {
			panic(err)
		}
		t.RelayedIP = netip.MustParseAddr(r.relayed)
		a.relays.checks = append(a.relays.checks, relayCheck{relayTarget: t, OK: true})
	}
	return &peer{a: a, id: 7, log: slog.New(slog.DiscardHandler)}
}

// A member announces a third party's address as its relayed address on
// the shared relay client. Taken as is, this agent would ChannelBind
// toward it on its allocation (a permission for the stranger) and send
// WireGuard handshake initiations there through the relay, every 5 s for
// as long as it keeps trying. Only an address on the IP of a relay of the
// mesh is taken: a server's IP from the relay list, or where a probe
// allocation on one relayed from (hosted TURN services relay from other
// IPs than they listen on).
func TestRelayAddrOnlyOnMeshRelays(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.77:9999", false},   // a stranger on the internet
		{"198.51.100.21:50000", false}, // next to the hosted relay, not it
		{"203.0.113.10:49200", true},   // the embedded relay
		{"198.51.100.20:50000", true},  // the hosted relay's relayed IP
	} {
		p := sharedRelayAgent()
		p.relayAddrSignalLocked(&control.Signal{From: p.id, Lane: control.LaneRelay, Kind: signalRelayAddr, Candidate: tc.addr})
		want := netip.AddrPort{}
		if tc.ok {
			want = netip.MustParseAddrPort(tc.addr)
		}
		if p.shared.peerAddr != want {
			t.Errorf("peer announces relayed address %s: taken %v, want %v", tc.addr, p.shared.peerAddr, want)
		}
	}
}

// A member cycling through relayed addresses on a mesh relay costs this
// agent a channel (and WireGuard's handshakes) per address it takes: the
// changes taken are bounded per peer (peerStartRate's burst, then one per
// 2 s).
func TestRelayAddrChangesBounded(t *testing.T) {
	p := sharedRelayAgent()
	taken := 0
	for port := 50000; port < 50100; port++ {
		addr := "203.0.113.10:" + strconv.Itoa(port)
		p.relayAddrSignalLocked(&control.Signal{From: p.id, Lane: control.LaneRelay, Kind: signalRelayAddr, Candidate: addr})
		if p.shared.peerAddr.String() == addr {
			taken++
		}
	}
	if taken > int(peerStartRate.Burst)+1 {
		t.Errorf("100 relayed addresses announced at once: %d taken, want at most %d", taken, int(peerStartRate.Burst)+1)
	}
	t.Logf("100 relayed addresses announced at once: %d taken", taken)
}

// The probe of a relay records where its allocations relay from, which
// relayAddrAllowed then accepts for a peer's relayed address.
func TestRelayProbeRecordsRelayedIP(t *testing.T) {
	s := startTestRelay(t)
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	tg := testTarget(s, 1)
	if err := a.probeRelay(&tg); err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("127.0.0.1"); tg.RelayedIP != want {
		t.Errorf("probe recorded relayed IP %v, want %v", tg.RelayedIP, want)
	}
}

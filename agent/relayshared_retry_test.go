package agent

import (
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestSharedRelayRetryBacksOff: a TCP relay that takes the connection and
// hangs up at once (or refuses it) for two minutes. The agent retries
// every second for the first few seconds (a short cut heals quickly), then
// less and less often, instead of a connection and a warning every second
// until the next probe says the relay is gone (up to 10 minutes).
func TestSharedRelayRetryBacksOff(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dials atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	a := &Agent{cfg: Config{RelayClient: RelayClientShared}, log: slog.New(slog.DiscardHandler), bind: NewBind()}
	a.relays = &relayManager{a: a}
	a.shared = &sharedRelay{a: a}
	tg, err := parseRelay(control.Relay{URL: "turn:" + ln.Addr().String() + "?transport=tcp"})
	if err != nil {
		t.Fatal(err)
	}
	a.relays.checks = []relayCheck{{relayTarget: tg, OK: true}}
	start := time.Now()
	const secs = 120
	for i := range secs {
		a.shared.tick(start.Add(time.Duration(i) * time.Second))
		for wait := 0; ; wait++ { // the attempt runs off the tick
			a.shared.mu.Lock()
			opening := a.shared.opening
			a.shared.mu.Unlock()
			if !opening {
				break
			}
			if wait > 500 {
				t.Fatal("an attempt did not end within 5 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if n := dials.Load(); n < 5 || n > 20 {
		t.Fatalf("%d connections to a failing relay in %d s, want 5-20", n, secs)
	}
	t.Logf("%d connections to a failing relay in %d s", dials.Load(), secs)
}

package datapath

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshvpn/meshvpn/relay"
	"github.com/meshvpn/meshvpn/relay/relaytest/loopback"
)

// startTestRelay runs the relay package's server on loopback for nodes
// 1..100.
func startTestRelay(t *testing.T) *relay.Server { return loopback.Start(t) }

// testTarget is node's relay server entry for s.
func testTarget(s *relay.Server, node uint64) RelayServer {
	url, user, pass, addr := loopback.Credential(s, node)
	return RelayServer{URL: url, Username: user, Password: pass, Transport: "udp", Server: addr}
}

// wgMessage looks like a WireGuard data message to classify.
func wgMessage(tag byte) []byte {
	p := make([]byte, 64)
	p[0] = 4
	p[63] = tag
	return p
}

// receiveAll runs the routes' receive function of b as WireGuard would
// (without opening its sockets) and passes on copies of what it returns.
func receiveAll(t *testing.T, b *Bind) <-chan []byte {
	b.relays.open()
	t.Cleanup(b.relays.close)
	recv := b.relays.receiveFunc()
	got := make(chan []byte, 1024)
	go func() {
		bufs := make([][]byte, 128)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, len(bufs))
		eps := make([]conn.Endpoint, len(bufs))
		for {
			n, err := recv(bufs, sizes, eps)
			if err != nil {
				return
			}
			for i := range n {
				got <- append([]byte(nil), bufs[i][:sizes[i]]...)
			}
		}
	}()
	return got
}

// TestSharedRelayClientDelivers: two agents' shared clients on one relay,
// each with a channel to the other's relayed address, carry WireGuard
// messages both ways as ChannelData.
func TestSharedRelayClientDelivers(t *testing.T) {
	s := startTestRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bind := NewBind(nil)
	got := receiveAll(t, bind)
	a, err := NewRelayClient(ctx, slog.New(slog.DiscardHandler), testTarget(s, 1), bind)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewRelayClient(ctx, slog.New(slog.DiscardHandler), testTarget(s, 2), bind)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	chA, err := a.Channel(b.RelayedAddr())
	if err != nil {
		t.Fatal(err)
	}
	chB, err := b.Channel(a.RelayedAddr())
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range []*RelayChan{chA, chB} {
		// A batch of equal-sized messages: sent with GSO, relayed with
		// GSO, read with GRO where the kernel has them; they must come
		// out whole and in order all the same.
		var batch [][]byte
		for k := range 20 {
			m := wgMessage(byte(i + 1))
			m[62] = byte(k)
			batch = append(batch, m)
		}
		if err := ch.ep.send(batch); err != nil {
			t.Fatal(err)
		}
		for _, msg := range batch {
			select {
			case p := <-got:
				if !bytes.Equal(p, msg) {
					t.Fatalf("got %x, want %x", p, msg)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("message %d/%d not relayed", i+1, msg[62])
			}
		}
	}
}

// TestSharedRelayOneAllocation: one agent relaying to 50 peers holds one
// allocation on the relay, as the relay's own counters say.
func TestSharedRelayOneAllocation(t *testing.T) {
	s := startTestRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := NewRelayClient(ctx, slog.New(slog.DiscardHandler), testTarget(s, 1), NewBind(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for i := range 50 {
		peer := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", 42000+i))
		if _, err := a.Channel(peer); err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
	}
	if n := s.NodeAllocations(1); n != 1 {
		t.Fatalf("relay counts %d allocations for the agent with 50 relayed peers, want 1", n)
	}
}

// TestRefreshDue: an allocation is refreshed on the tick nearest half its
// life, also when that tick comes a little early; never a whole tick late.
func TestRefreshDue(t *testing.T) {
	for _, c := range []struct {
		ago, life time.Duration
		want      bool
	}{
		{refreshTick - time.Microsecond, 10 * time.Second, true}, // the early tick of a 10 s lifetime
		{refreshTick, 10 * time.Second, true},
		{time.Second, 10 * time.Second, false},
		{60*time.Second - time.Millisecond, 2 * time.Minute, true},
		{55 * time.Second, 2 * time.Minute, false},
		{300 * time.Second, 10 * time.Minute, true},
		{290 * time.Second, 10 * time.Minute, false},
	} {
		if got := refreshDue(c.ago, c.life); got != c.want {
			t.Errorf("refreshed %v ago, lifetime %v: due %v, want %v", c.ago, c.life, got, c.want)
		}
	}
}

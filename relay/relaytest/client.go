// Package relaytest helps tests talk to a relay as a TURN client.
package relaytest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// Allocate makes a TURN allocation on server over UDP from 127.0.0.1 with
// the given credentials (pion's client, which refreshes it); the test's
// cleanup closes both.
func Allocate(t testing.TB, server, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: pc, Username: user, Password: pass, Realm: "meshvpn"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	relayed, err := c.AllocateWithContext(ctx)
	if err == nil {
		t.Cleanup(func() { relayed.Close() })
	}
	return c, relayed, err
}

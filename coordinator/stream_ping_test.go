package coordinator

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestStreamSlowReaderKeptAfterNetmap: an agent still reading a large
// netmap cannot answer a ping queued behind it. The ping's timeout allows
// for the bytes written before it, so a reader slower than the ping
// timeout but faster than the minimum read rate keeps its stream. (The
// first ping after a 2 MB netmap had the plain 10 s timeout.)
func TestStreamSlowReaderKeptAfterNetmap(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) {
		s.pingInterval = 50 * time.Millisecond
		s.pingTimeout = 200 * time.Millisecond
		s.pingReadRate = 8 << 10 // bytes a second
	})
	key := newKey(t, s.store, true, 0)
	var a control.RegisterResponse
	for i := range 60 {
		a = mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "node-with-a-longish-name-" + strconv.Itoa(i), PublicKey: newPublicKey(t)})
	}
	c := dialStream(t, base, a.Credential)
	// Busy for several ping timeouts, within what the netmap's size
	// allows at the read rate (60 nodes: over 10 KB, over 1.2 s).
	time.Sleep(700 * time.Millisecond)
	if m := readMsg(t, c); m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 59 {
		t.Fatalf("first frame: %q with %d peers", m.Type, len(m.Netmap.Peers))
	}
	go func() { // from now on a quick reader, answering pings
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	time.Sleep(10 * s.pingInterval)
	if n, _ := s.hub.Node(a.NodeID); !n.Online || s.hub.Counts().Streams != 1 {
		t.Fatalf("slow reader dropped after its netmap: online %v, streams %d", n.Online, s.hub.Counts().Streams)
	}
}

package coordinator

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// dialVersion opens a stream asking for protocol version v ("" sends none,
// as version 1 agents did not).
func dialVersion(t *testing.T, base, cred, v string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + control.PathStream
	if v != "" {
		u += "?v=" + v
	}
	h := http.Header{"Authorization": {"Bearer " + cred}}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial v=%q: %v", v, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestStreamOlderAgents checks negotiation over the wire: an agent sending
// no version or v=1 is spoken to in version 1 and is never sent its own
// node, while batches still reach it; a newer agent gets our version.
func TestStreamOlderAgents(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	old := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "old", PublicKey: newPublicKey(t)})
	none := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "none", PublicKey: newPublicKey(t)})
	future := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "future", PublicKey: newPublicKey(t)})

	cases := []struct {
		cred, v string
		want    int
	}{{old.Credential, "1", 1}, {none.Credential, "", 1}, {future.Credential, "99", control.ProtocolVersion}}
	conns := make([]*websocket.Conn, len(cases))
	for i, c := range cases {
		conns[i] = dialVersion(t, base, c.cred, c.v)
		if m := readMsg(t, conns[i]); m.Type != control.MsgNetmap || m.Version != c.want {
			t.Fatalf("v=%q: first frame %+v, want netmap of version %d", c.v, m, c.want)
		}
	}
	// A new node joins; every stream hears of it. The v1 streams must not
	// see themselves in any delta on the way.
	newcomer := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "newcomer", PublicKey: newPublicKey(t)})
	selves := []uint64{old.NodeID, none.NodeID}
	for i, c := range conns[:2] {
		heard := false
		for range 10 {
			m := readMsg(t, c)
			if m.Type != control.MsgDelta {
				t.Fatalf("v1 stream: %+v", m)
			}
			seen := false
			for _, n := range m.Delta.Upsert {
				if n.ID == selves[i] {
					t.Fatalf("v1 stream of node %d was sent its own node: %+v", selves[i], m.Delta)
				}
				seen = seen || n.ID == newcomer.NodeID
			}
			if seen {
				heard = true
				break
			}
		}
		if !heard {
			t.Fatalf("v1 stream of node %d never heard of the newcomer", selves[i])
		}
	}
	if n := readUpsert(t, conns[2], newcomer.NodeID); n.Name != "newcomer" {
		t.Fatalf("v2 stream: %+v", n)
	}
}

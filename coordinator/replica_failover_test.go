package coordinator

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// TestReplicaFailOverAllResume: every agent of a replica that stopped
// moves to the survivor and each is resumed, also once more than half the
// mesh has moved. Moving (same address, online before and after) changes
// nothing peers see, so it must not date the nodes as changed: it did, and
// the agents after the first half got full netmaps (misses "too_many").
func TestReplicaFailOverAllResume(t *testing.T) {
	const agents = 10
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	a, stopA := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Store: url, Logger: testLogger(t)})
	baseA := "http://" + a.HTTPAddr().String()
	b, baseB := startReplica(t, url)
	key := newKey(t, a.store, true, 0)
	var creds []string
	var ids []uint64
	for i := range agents {
		r := registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "n" + strconv.Itoa(i), PublicKey: newPublicKey(t)})
		creds, ids = append(creds, r.Credential), append(ids, r.NodeID)
	}
	conns := make([]*websocket.Conn, agents)
	held := make([]string, agents)
	for i, cred := range creds {
		conns[i] = dialStream(t, baseA, cred)
		held[i] = readMsg(t, conns[i]).NetmapVersion
	}
	// A batch stored past changedMargin after they came online: a resume
	// from its version need not name them.
	time.Sleep(5*time.Second + 100*time.Millisecond) // hub.changedMargin
	registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "late", PublicKey: newPublicKey(t)})
	for i, c := range conns {
		held[i] = latestVersion(t, a.hub, c, held[i])
		go func() { // answer A's close handshake
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	for _, id := range ids {
		waitHubOnline(t, b.hub, id, true)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}

	for i, cred := range creds {
		c, _, err := dialStreamSince(t, baseB, cred, held[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() }) // a stream that ends is a real offline change
		m := readMsg(t, c)
		if m.Type != control.MsgResume {
			t.Fatalf("agent %d of %d moving to B with A's %s got %q, want a resume", i+1, agents, held[i], m.Type)
		}
		b.hub.Flush() // its online write reaches the store before the next one moves
	}
}

package coordinator

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

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

// TestReplicaMoveLoopNoFlap: a member moving between two replicas in a
// loop (a stream on one, then on the other, then the old one closed, from
// one address) is online throughout as peers see it: the replica it left
// must not tell its agents it went offline (its offline write loses to
// the new replica's claim), and each move costs each replica at most one
// batch naming it, whose state peers already had. Nor is it dated as
// changed (changed_at), so a fail-over still resumes everyone.
func TestReplicaMoveLoopNoFlap(t *testing.T) {
	const moves = 6
	srv, base := startReplicas(t, 2)
	key := newKey(t, srv[0].store, true, 0)
	member := registerHTTP(t, base[0], control.RegisterRequest{AuthKey: key, Hostname: "member", PublicKey: newPublicKey(t)})
	var obs []control.RegisterResponse
	for i := range srv {
		obs = append(obs, registerHTTP(t, base[i], control.RegisterRequest{AuthKey: key, Hostname: "obs" + strconv.Itoa(i), PublicKey: newPublicKey(t)}))
	}
	old := dialStream(t, base[0], member.Credential)
	readMsg(t, old)
	for _, s := range srv {
		waitHubOnline(t, s.hub, member.NodeID, true)
	}
	type seen struct{ offline, named atomic.Int64 }
	var at [2]seen
	for i := range srv {
		c := dialStream(t, base[i], obs[i].Credential)
		readMsg(t, c)
		go func() {
			for {
				var m control.Message
				if err := wsjson.Read(context.Background(), c, &m); err != nil {
					return
				}
				if deltaUpsert(member.NodeID, func(control.Node) bool { return true })(m) {
					at[i].named.Add(1)
				}
				if deltaUpsert(member.NodeID, func(n control.Node) bool { return !n.Online })(m) {
					at[i].offline.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the observers' own online batches are out
	for i := range at {
		at[i].named.Store(0)
	}
	mark := time.Now().UnixMilli() // the database's clock is the host's
	for i := range moves {
		to := (i + 1) % 2
		c := dialStream(t, base[to], member.Credential)
		if m := readMsg(t, c); m.Type != control.MsgNetmap {
			t.Fatalf("move %d: first frame %q", i, m.Type)
		}
		time.Sleep(200 * time.Millisecond) // the new replica's claim is written
		old.CloseNow()
		old = c
		time.Sleep(200 * time.Millisecond)
	}
	// Nor is it dated as changed: a fail-over then resumes everyone.
	if ids, err := srv[0].store.changedSince(context.Background(), mark); err != nil || slices.Contains(ids, member.NodeID) {
		t.Errorf("member dated as changed by its moves (nodes changed since: %v, %v)", ids, err)
	}
	for i := range at {
		if n := at[i].offline.Load(); n > 0 {
			t.Errorf("replica %d told its agent %d times that the member went offline during %d moves", i, n, moves)
		}
		if n := at[i].named.Load(); n > moves {
			t.Errorf("replica %d sent %d batches naming the member for %d moves", i, n, moves)
		}
	}
}

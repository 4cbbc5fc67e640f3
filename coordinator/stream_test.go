package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// registerHTTP registers over the real API.
func registerHTTP(t *testing.T, base string, req control.RegisterRequest) control.RegisterResponse {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := http.Post(base+control.PathRegister, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register %s: status %d", req.Hostname, resp.StatusCode)
	}
	var r control.RegisterResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func dialStream(t *testing.T, base, cred string) *websocket.Conn {
	t.Helper()
	c, resp, err := dialStreamErr(t, base, cred)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial stream: %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func dialStreamErr(t *testing.T, base, cred string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	if cred != "" {
		h.Set("Authorization", "Bearer "+cred)
	}
	u := "ws" + strings.TrimPrefix(base, "http") + control.PathStream + "?v=" + strconv.Itoa(control.ProtocolVersion)
	return websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
}

func readMsg(t *testing.T, c *websocket.Conn) control.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var m control.Message
	if err := wsjson.Read(ctx, c, &m); err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return m
}

// readUpsert reads deltas until one carries node id and returns it. Deltas
// are batched, so others (the reader's own node, say) may come first.
func readUpsert(t *testing.T, c *websocket.Conn, id uint64) control.Node {
	t.Helper()
	for range 10 {
		m := readMsg(t, c)
		if m.Type != control.MsgDelta || m.Delta == nil {
			t.Fatalf("want a delta, got %+v", m)
		}
		for _, n := range m.Delta.Upsert {
			if n.ID == id {
				return n
			}
		}
	}
	t.Fatalf("no delta for node %d in 10 frames", id)
	return control.Node{}
}

func TestStreamNetmapDeltasAndSignals(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})

	ca := dialStream(t, base, a.Credential)
	m := readMsg(t, ca)
	if m.Type != control.MsgNetmap || m.Version != control.ProtocolVersion || m.Netmap == nil {
		t.Fatalf("first frame: %+v", m)
	}
	nm := m.Netmap
	if nm.Self.ID != a.NodeID || nm.Self.IP != a.IP || !nm.Self.Online {
		t.Fatalf("self: %+v", nm.Self)
	}
	if len(nm.Peers) != 1 || nm.Peers[0].ID != b.NodeID || nm.Peers[0].Online {
		t.Fatalf("peers: %+v", nm.Peers)
	}
	stunPort := s.STUNAddr().(*net.UDPAddr).Port
	if want := "127.0.0.1:" + strconv.Itoa(stunPort); len(nm.STUN) != 1 || nm.STUN[0] != want {
		t.Fatalf("stun: %v, want [%s]", nm.STUN, want)
	}

	// A new node registers: alpha hears of it.
	c := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "gamma", PublicKey: newPublicKey(t)})
	if n := readUpsert(t, ca, c.NodeID); n.ID != c.NodeID || n.Name != "gamma" || n.Online {
		t.Fatalf("delta for gamma: %+v", n)
	}

	// beta connects: alpha sees it online; beta's netmap has alpha online.
	cb := dialStream(t, base, b.Credential)
	m = readMsg(t, cb)
	if m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 2 {
		t.Fatalf("beta netmap: %+v", m)
	}
	for _, p := range m.Netmap.Peers {
		if p.ID == a.NodeID && !p.Online {
			t.Fatalf("beta sees alpha offline: %+v", p)
		}
	}
	if n := readUpsert(t, ca, b.NodeID); n.ID != b.NodeID || !n.Online || n.LastSeen.IsZero() {
		t.Fatalf("delta for beta online: %+v", n)
	}

	// beta signals alpha, claiming to be someone else: From is fixed up.
	ctx := t.Context()
	sig := control.Signal{From: 999, To: a.NodeID, Kind: control.SignalOffer, Session: "s1", Ufrag: "u", Pwd: "p"}
	if err := wsjson.Write(ctx, cb, control.Message{Type: control.MsgSignal, Signal: &sig}); err != nil {
		t.Fatal(err)
	}
	// Garbage, unknown types and signals to nowhere are ignored.
	cb.Write(ctx, websocket.MessageText, []byte("{not json"))
	wsjson.Write(ctx, cb, control.Message{Type: "bogus"})
	wsjson.Write(ctx, cb, control.Message{Type: control.MsgSignal, Signal: &control.Signal{To: 12345, Kind: "offer"}})
	wsjson.Write(ctx, cb, control.Message{Type: control.MsgSignal})
	cand := control.Signal{To: a.NodeID, Kind: control.SignalCandidate, Session: "s1", Candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host"}
	wsjson.Write(ctx, cb, control.Message{Type: control.MsgSignal, Signal: &cand})

	m = readMsg(t, ca)
	want := sig
	want.From = b.NodeID
	if m.Type != control.MsgSignal || m.Signal == nil || *m.Signal != want {
		t.Fatalf("relayed signal: %+v, want %+v", m.Signal, want)
	}
	m = readMsg(t, ca)
	cand.From = b.NodeID
	if m.Type != control.MsgSignal || *m.Signal != cand {
		t.Fatalf("relayed candidate: %+v", m.Signal)
	}

	// beta leaves: alpha sees it offline, and so does the store.
	cb.Close(websocket.StatusNormalClosure, "")
	if n := readUpsert(t, ca, b.NodeID); n.ID != b.NodeID || n.Online {
		t.Fatalf("delta for beta offline: %+v", n)
	}
	online := onlineByID(t, s.store)
	if !online[a.NodeID] || online[b.NodeID] {
		t.Fatalf("store online flags: %v", online)
	}
}

// waitOnline polls the store until node id has the online flag want.
func waitOnline(t *testing.T, st *Store, id uint64, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for onlineByID(t, st)[id] != want {
		if time.Now().After(deadline) {
			t.Fatalf("node %d online=%v not stored within 5s", id, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func onlineByID(t *testing.T, st *Store) map[uint64]bool {
	t.Helper()
	nodes, err := st.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint64]bool{}
	for _, n := range nodes {
		m[n.ID] = n.Online
	}
	return m
}

func TestStreamAuth(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, false, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	for _, cred := range []string{"", "1.wrong", a.Credential + "x", "garbage"} {
		_, resp, err := dialStreamErr(t, base, cred)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			st := 0
			if resp != nil {
				st = resp.StatusCode
			}
			t.Errorf("credential %q: err %v status %d, want 401", cred, err, st)
		}
	}
	// POST to the stream path is not a stream.
	resp, err := http.Post(base+control.PathStream, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST stream: %d", resp.StatusCode)
	}
}

func TestStreamReplacedByNewer(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	cb := dialStream(t, base, b.Credential)
	readMsg(t, cb)

	old := dialStream(t, base, a.Credential)
	readMsg(t, old)
	if n := readUpsert(t, cb, a.NodeID); n.ID != a.NodeID || !n.Online {
		t.Fatalf("a online: %+v", n)
	}
	fresh := dialStream(t, base, a.Credential)
	if m := readMsg(t, fresh); m.Type != control.MsgNetmap {
		t.Fatalf("new stream: %+v", m)
	}
	// The old stream is closed by the server.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Deltas queued before the replacement may come first.
	var err error
	for range 10 {
		if _, _, err = old.Read(ctx); err != nil {
			break
		}
	}
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("old stream: %v, want close with going away", err)
	}
	// Peers only ever see a online; the replacement did not flap it offline.
	// It sends them nothing at all: a was online and stays so (a fresh
	// last-seen time is not worth a delta).
	rctx, rcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer rcancel()
	var m control.Message
	if err := wsjson.Read(rctx, cb, &m); err == nil {
		t.Fatalf("b was sent %s after a's stream was replaced, want nothing", m.Type)
	}
	time.Sleep(100 * time.Millisecond)
	if !onlineByID(t, s.store)[a.NodeID] {
		t.Fatal("a offline in store after replacement")
	}
}

func TestStreamDeadConnectionGoesOffline(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) {
		s.pingInterval = 50 * time.Millisecond
		s.pingTimeout = 200 * time.Millisecond
	})
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	cb := dialStream(t, base, b.Credential)
	readMsg(t, cb)

	// A client that never reads never answers pings: it looks dead.
	dialStream(t, base, a.Credential)
	if n := readUpsert(t, cb, a.NodeID); n.ID != a.NodeID || !n.Online {
		t.Fatalf("a online: %+v", n)
	}
	if n := readUpsert(t, cb, a.NodeID); n.ID != a.NodeID || n.Online {
		t.Fatalf("a should be dropped as dead: %+v", n)
	}
	if onlineByID(t, s.store)[a.NodeID] {
		t.Fatal("dead node online in store")
	}
}

// TestStreamShutdownKeepsOnline: a clean shutdown leaves online flags as
// the agents last saw them (so the next start can resume its agents, see
// hub/netmapversion.go); the next start marks offline, after restartGrace, the
// nodes that do not come back.
func TestStreamShutdownKeepsOnline(t *testing.T) {
	dir := t.TempDir()
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
	base := "http://" + s.HTTPAddr().String()
	key := newKey(t, s.store, false, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	c := dialStream(t, base, a.Credential)
	if m := readMsg(t, c); len(m.Netmap.STUN) != 0 {
		t.Fatalf("STUN disabled but netmap lists %v", m.Netmap.STUN)
	}
	// The store learns online state with the hub's next batch.
	waitOnline(t, s.store, a.NodeID, true)
	// The agent keeps reading, as real agents do, so it answers the close.
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				readErr <- err
				return
			}
		}
	}()
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("stream after shutdown: %v", err)
	}
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !onlineByID(t, st)[a.NodeID] {
		t.Fatal("shutdown cleared the online flag the agents were sent")
	}
	st.Close()

	s2, stop2 := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t), restartGrace: 300 * time.Millisecond})
	defer stop2()
	if n, _ := s2.hub.Node(a.NodeID); !n.Online {
		t.Fatal("restarted coordinator forgot that a was online")
	}
	// a never comes back: offline once the grace is over, in the hub and
	// the store.
	waitOnline(t, s2.store, a.NodeID, false)
	if n, _ := s2.hub.Node(a.NodeID); n.Online {
		t.Fatal("a still online in the hub after the grace")
	}
}

func TestHubDropsSlowStream(t *testing.T) {
	s := newTestServer(t)
	key := newKey(t, s.store, true, 0)
	a := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	c := hubtest.NewConnFrom(a.NodeID, "", 4)
	attachConn(t, s, c, 1)
	for range 10 {
		mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "x", PublicKey: newPublicKey(t)})
		s.hub.Flush() // one delta per registration
	}
	if c.Closed != 1 {
		t.Fatalf("slow stream closed %d times, want 1", c.Closed)
	}
	if q := c.Queue(); len(q) != cap(q) {
		t.Fatalf("queue holds %d frames", len(q))
	}
	s.hub.Detach(c.Stream)
}

package coordinator

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// fanOutWithin is how soon a change on one replica must reach the agents
// of another (issue 11).
const fanOutWithin = time.Second

// startReplicas runs n coordinators on one fresh PostgreSQL database.
func startReplicas(t *testing.T, n int, opts ...func(*Server)) (srv []*Server, base []string) {
	t.Helper()
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	for range n {
		s, b := startReplica(t, url, opts...)
		srv, base = append(srv, s), append(base, b)
	}
	return srv, base
}

// startReplica runs one coordinator on the PostgreSQL database url.
func startReplica(t *testing.T, url string, opts ...func(*Server)) (*Server, string) {
	t.Helper()
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Store: url, Logger: testLogger(t)}, opts...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, "http://" + s.HTTPAddr().String()
}

// awaitFrame reads frames until match accepts one, failing after within.
func awaitFrame(t *testing.T, c *websocket.Conn, within time.Duration, what string, match func(control.Message) bool) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		var m control.Message
		if err := wsjson.Read(ctx, c, &m); err != nil {
			t.Fatalf("%s: not seen within %v: %v", what, within, err)
		}
		if match(m) {
			return time.Since(start)
		}
	}
}

func deltaUpsert(id uint64, ok func(control.Node) bool) func(control.Message) bool {
	return func(m control.Message) bool {
		if m.Type != control.MsgDelta || m.Delta == nil {
			return false
		}
		i := slices.IndexFunc(m.Delta.Upsert, func(n control.Node) bool { return n.ID == id })
		return i >= 0 && ok(m.Delta.Upsert[i])
	}
}

// TestReplicasFanOut runs two coordinators on one PostgreSQL database, an
// agent stream on each: a registration, a connect, a rename, a removal and
// a disconnect made on one reach the agent on the other within a second,
// and ICE signals cross between them both ways.
func TestReplicasFanOut(t *testing.T) {
	srv, base := startReplicas(t, 2)
	a, b := srv[0], srv[1]
	key := newKey(t, a.store, true, 0)
	alpha := registerHTTP(t, base[0], control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base[0], alpha.Credential)
	if m := readMsg(t, ca); m.Type != control.MsgNetmap {
		t.Fatalf("first frame: %+v", m)
	}

	// Registered on B: alpha on A hears of it.
	beta := registerHTTP(t, base[1], control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	took := awaitFrame(t, ca, fanOutWithin, "beta's registration on B at A's agent", deltaUpsert(beta.NodeID, func(n control.Node) bool {
		if n.IP6 == "" || n.IP6 != beta.IP6 {
			t.Fatalf("beta at A has IPv6 overlay address %q, B gave it %q", n.IP6, beta.IP6)
		}
		return n.Name == "beta"
	}))
	t.Logf("registration on B reached A's agent in %v", took.Round(time.Millisecond))

	// beta connects to B: A's agent sees it online, and beta's netmap
	// (from B) has alpha online, held by A.
	waitHubOnline(t, b.hub, alpha.NodeID, true)
	cb := dialStream(t, base[1], beta.Credential)
	m := readMsg(t, cb)
	if m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 1 || !m.Netmap.Peers[0].Online {
		t.Fatalf("beta's netmap from B: %+v", m.Netmap)
	}
	took = awaitFrame(t, ca, fanOutWithin, "beta online at A", deltaUpsert(beta.NodeID, func(n control.Node) bool { return n.Online }))
	t.Logf("online on B reached A's agent in %v", took.Round(time.Millisecond))

	// Signals cross both ways; From is the sender, whatever it claimed.
	ctx := t.Context()
	offer := control.Signal{From: 999, To: alpha.NodeID, Kind: control.SignalOffer, Session: "s1", Ufrag: "u", Pwd: "p"}
	if err := wsjson.Write(ctx, cb, control.Message{Type: control.MsgSignal, Signal: &offer}); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "beta's offer at alpha", func(m control.Message) bool {
		return m.Type == control.MsgSignal && m.Signal != nil && m.Signal.From == beta.NodeID && m.Signal.Session == "s1"
	})
	answer := control.Signal{To: beta.NodeID, Kind: control.SignalAnswer, Session: "s1", Ufrag: "u2", Pwd: "p2"}
	if err := wsjson.Write(ctx, ca, control.Message{Type: control.MsgSignal, Signal: &answer}); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, cb, fanOutWithin, "alpha's answer at beta", func(m control.Message) bool {
		return m.Type == control.MsgSignal && m.Signal != nil && m.Signal.From == alpha.NodeID && m.Signal.Kind == control.SignalAnswer
	})

	// A rename through B reaches A's agent.
	if _, err := b.RenameNode(ctx, "beta", "beta-renamed"); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "rename on B at A", deltaUpsert(beta.NodeID, func(n control.Node) bool { return n.Name == "beta-renamed" }))

	// A node registered on A and removed through B: gone at B's agent.
	gamma := registerHTTP(t, base[0], control.RegisterRequest{AuthKey: key, Hostname: "gamma", PublicKey: newPublicKey(t)})
	awaitFrame(t, cb, fanOutWithin, "gamma at B", deltaUpsert(gamma.NodeID, func(control.Node) bool { return true }))
	if _, err := b.RemoveNode(ctx, "gamma"); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "gamma's removal on B at A", isRemoveOf(gamma.NodeID))
	if a.hub.Active(gamma.NodeID) {
		t.Fatal("A still has gamma as a member")
	}

	// A policy set through B under which alpha and beta are no peers:
	// A's agent drops beta; cleared through B, beta is back.
	if err := b.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["lonely:*"]}]}`)); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "policy set on B at A", isRemoveOf(beta.NodeID))
	if err := b.ClearPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "policy cleared on B at A", deltaUpsert(beta.NodeID, func(control.Node) bool { return true }))

	// beta leaves B: A's agent sees it offline.
	cb.Close(websocket.StatusNormalClosure, "")
	took = awaitFrame(t, ca, fanOutWithin, "beta offline at A", deltaUpsert(beta.NodeID, func(n control.Node) bool { return !n.Online }))
	t.Logf("offline on B reached A's agent in %v", took.Round(time.Millisecond))
}

// TestReplicasChallenge: a challenge issued by one replica proves a key on
// another, once: replayed on the first, it is stale.
func TestReplicasChallenge(t *testing.T) {
	srv, base := startReplicas(t, 2)
	key := newKey(t, srv[0].store, true, 0)
	nk := newNodeKey(t)
	req := nk.prove(t, fetchChallengeHTTP(t, base[0]), control.RegisterRequest{AuthKey: key, Hostname: "proven"})
	if code, _, e := register(t, srv[1].Handler(), req); code != http.StatusOK {
		t.Fatalf("challenge from A used on B: %d %s", code, e.Error)
	}
	if code, _, e := register(t, srv[0].Handler(), req); code != http.StatusUnauthorized || e.Error != ErrChallengeStale.Error() {
		t.Fatalf("the same challenge replayed on A: %d %q, want 401 %q", code, e.Error, ErrChallengeStale)
	}
}

// waitHubOnline waits until h sees node id online (or offline).
func waitHubOnline(t *testing.T, h *hub.Hub, id uint64, want bool) {
	t.Helper()
	deadline := time.Now().Add(fanOutWithin)
	for {
		n, ok := h.Node(id)
		if ok && n.Online == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d online=%v, want %v within %v", id, n.Online, want, fanOutWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicasConcurrentRegistrations registers nodes on two replicas at
// once: no address (or name) is handed out twice.
func TestReplicasConcurrentRegistrations(t *testing.T) {
	srv, base := startReplicas(t, 2)
	key := newKey(t, srv[0].store, true, 0)
	const each = 20
	var mu sync.Mutex
	var got []control.RegisterResponse
	var wg sync.WaitGroup
	for i := range 2 * each {
		wg.Go(func() {
			r := registerHTTP(t, base[i%2], control.RegisterRequest{AuthKey: key, Hostname: "node", PublicKey: newPublicKey(t)})
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	ips, names := map[string]bool{}, map[string]bool{}
	for _, r := range got {
		if ips[r.IP] || names[r.Name] {
			t.Fatalf("address %s or name %s handed out twice", r.IP, r.Name)
		}
		ips[r.IP], names[r.Name] = true, true
	}
	if len(ips) != 2*each {
		t.Fatalf("%d registrations, want %d", len(ips), 2*each)
	}
}

// TestReplicasOwnEpoch: a replica started after another has sent batches
// does not take over its netmap version, so an agent that moves from one
// to the other with a version of the first is sent a full netmap, never a
// delta (or "nothing changed") counted against another history.
func TestReplicasOwnEpoch(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	a, baseA := startReplica(t, url)
	key := newKey(t, a.store, true, 0)
	alpha := registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	ca := dialStream(t, baseA, alpha.Credential)
	readMsg(t, ca)
	a.hub.Flush()
	held := a.hub.NetmapVersion()

	b, _ := startReplica(t, url)
	mine := b.hub.NetmapVersion()
	if epoch, _, _ := strings.Cut(held, "."); strings.HasPrefix(mine, epoch+".") {
		t.Fatalf("replica B (version %s) would resume an agent holding A's version %s from its own batches", mine, held)
	}
}

// TestReplicasEphemeral: an ephemeral node registered on A whose stream is
// on B is not removed by A while online there; once it leaves B it is
// removed, once, by whichever replica is first.
func TestReplicasEphemeral(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv, base := startReplicas(t, 2, func(s *Server) { s.life.ephemeral = newEphemeralTracker(timeout, timeout) })
	a, b := srv[0], srv[1]
	k, err := a.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Reusable: true, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	e := registerHTTP(t, base[0], control.RegisterRequest{AuthKey: k.Key, Hostname: "eph", PublicKey: newPublicKey(t)})
	c := dialStream(t, base[1], e.Credential)
	readMsg(t, c)
	time.Sleep(5 * timeout)
	for i, s := range srv {
		if !s.hub.Active(e.NodeID) {
			t.Fatalf("replica %d removed the ephemeral node while its stream is on B", i)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(10 * timeout)
	for a.hub.Active(e.NodeID) || b.hub.Active(e.NodeID) {
		if time.Now().After(deadline) {
			t.Fatalf("ephemeral node still a member %v after it went offline", 10*timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasAdminDirect: an admin command on a host with no coordinator
// writes the store directly, and the running replicas still tell their
// agents within a second.
func TestReplicasAdminDirect(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	a, base := startReplica(t, url)
	key := newKey(t, a.store, true, 0)
	alpha := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	beta := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, alpha.Credential)
	readMsg(t, ca)
	adm, err := OpenAdminStore(t.Context(), t.TempDir(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if adm.Live() {
		t.Fatal("admin went through a server; want the store directly")
	}
	if _, err := adm.RemoveNode(t.Context(), "beta"); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, ca, fanOutWithin, "direct removal at A's agent", isRemoveOf(beta.NodeID))
}

// TestReplicaRestartResumes: a replica restarted on its state directory
// resumes its agents from the netmap version they hold, and the resume
// carries what another replica changed while it was down (a node that
// came online there).
func TestReplicaRestartResumes(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	dirA := t.TempDir()
	a, stopA := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: dirA, Store: url, Logger: testLogger(t)})
	baseA := "http://" + a.HTTPAddr().String()
	b, baseB := startReplica(t, url)
	key := newKey(t, b.store, true, 0)
	alpha := registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	beta := registerHTTP(t, baseB, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	// Idle members, so that a few changes are worth a resume (a resume
	// naming more than half the mesh is sent as a netmap).
	for i := range 4 {
		registerHTTP(t, baseB, control.RegisterRequest{AuthKey: key, Hostname: "idle" + strconv.Itoa(i), PublicKey: newPublicKey(t)})
	}
	for _, id := range []uint64{beta.NodeID, beta.NodeID + 4} {
		waitHubMember(t, a.hub, id)
	}
	ca := dialStream(t, baseA, alpha.Credential)
	m := readMsg(t, ca)
	held := m.NetmapVersion
	if m.Type != control.MsgNetmap || held == "" || len(m.Netmap.Peers) != 5 {
		t.Fatalf("alpha's netmap: %+v", m)
	}
	held = latestVersion(t, a.hub, ca, held)
	go func() { // answer A's close handshake
		for {
			if _, _, err := ca.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	if err := stopA(); err != nil {
		t.Fatal(err)
	}

	// While A is down, beta comes online on B.
	cb := dialStream(t, baseB, beta.Credential)
	readMsg(t, cb)
	waitHubOnline(t, b.hub, beta.NodeID, true)
	time.Sleep(100 * time.Millisecond) // B's batch with beta online is written

	a3, stop3 := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: dirA, Store: url, Logger: testLogger(t)})
	t.Cleanup(func() { stop3() })
	c, _, err := dialStreamSince(t, "http://"+a3.HTTPAddr().String(), alpha.Credential, held)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	m = readMsg(t, c)
	if m.Type != control.MsgResume {
		t.Fatalf("restarted A answered alpha holding %s with %q (nv %s), want a resume", held, m.Type, m.NetmapVersion)
	}
	if m.Delta == nil || !slices.ContainsFunc(m.Delta.Upsert, func(n control.Node) bool { return n.ID == beta.NodeID && n.Online }) {
		t.Fatalf("resume does not bring beta online (changed on B while A was down): %+v", m.Delta)
	}
}

// waitHubMember waits until h knows node id.
func waitHubMember(t *testing.T, h *hub.Hub, id uint64) {
	t.Helper()
	deadline := time.Now().Add(fanOutWithin)
	for !h.Active(id) {
		if time.Now().After(deadline) {
			t.Fatalf("node %d not a member within %v", id, fanOutWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialStreamSince dials a stream naming the netmap version held.
func dialStreamSince(t *testing.T, base, cred, since string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cred)
	u := "ws" + strings.TrimPrefix(base, "http") + control.PathStream + "?v=" + strconv.Itoa(control.ProtocolVersion) +
		"&" + control.QuerySince + "=" + since
	return websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
}

// latestVersion waits until h's version is steady, then reads c's frames
// until one names it (reads are not cancelled: that would drop the stream).
func latestVersion(t *testing.T, h *hub.Hub, c *websocket.Conn, held string) string {
	t.Helper()
	version := h.NetmapVersion
	want := version()
	for steady := time.Now(); time.Since(steady) < 300*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if v := version(); v != want {
			want, steady = v, time.Now()
		}
	}
	for held != want {
		held = cmp.Or(readMsg(t, c).NetmapVersion, held)
	}
	return held
}

// TestReplicaFailOverResumes: an agent whose replica stopped moves to
// another with the first one's version and is resumed there, not sent a
// full netmap; the resume carries what changed meanwhile (a node that
// came online on the survivor). A version the store does not hold as the
// stopped replica's last one still gets a full netmap.
func TestReplicaFailOverResumes(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	a, baseA := startReplica(t, url)
	key := newKey(t, a.store, true, 0)
	// Nodes B finds at its start: what changes after is less than half
	// the mesh, so even B's first version can be resumed.
	for i := range 20 {
		registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "old" + strconv.Itoa(i), PublicKey: newPublicKey(t)})
	}
	b, stopB := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Store: url, Logger: testLogger(t)})
	baseB := "http://" + b.HTTPAddr().String()
	alpha := registerHTTP(t, baseB, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	gamma := registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "gamma", PublicKey: newPublicKey(t)})
	for i := range 4 {
		registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "idle" + strconv.Itoa(i), PublicKey: newPublicKey(t)})
	}
	waitHubMember(t, b.hub, gamma.NodeID+4)
	cb := dialStream(t, baseB, alpha.Credential)
	m := readMsg(t, cb)
	if m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 25 {
		t.Fatalf("alpha's netmap from B: %+v", m)
	}
	held := latestVersion(t, b.hub, cb, m.NetmapVersion)
	go func() { // answer B's close handshake
		for {
			if _, _, err := cb.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	if err := stopB(); err != nil {
		t.Fatal(err)
	}

	// While alpha moves, gamma comes online on A.
	cg := dialStream(t, baseA, gamma.Credential)
	readMsg(t, cg)
	time.Sleep(100 * time.Millisecond) // A's batch with gamma online is written

	// A version of B's newer than any B stored (B's shutdown may store
	// one more batch than alpha read): a netmap.
	epoch, seqText, _ := strings.Cut(held, ".")
	seq, _ := strconv.ParseUint(seqText, 10, 64)
	c, _, err := dialStreamSince(t, baseA, alpha.Credential, epoch+"."+strconv.FormatUint(seq+1000, 10))
	if err != nil {
		t.Fatal(err)
	}
	if m := readMsg(t, c); m.Type != control.MsgNetmap {
		t.Fatalf("alpha holding %s.%d (B's %s and later) got %q, want a netmap", epoch, seq+1000, held, m.Type)
	}
	c.CloseNow()

	// B's last version, and an older one its stored batches reach back
	// to (B's first netmap, before any batch): resumes.
	for _, since := range []string{held, epoch + ".0"} {
		c, _, err = dialStreamSince(t, baseA, alpha.Credential, since)
		if err != nil {
			t.Fatal(err)
		}
		m = readMsg(t, c)
		c.CloseNow()
		if m.Type != control.MsgResume {
			t.Fatalf("A answered alpha holding B's %s (B stored %s) with %q (nv %s), want a resume", since, held, m.Type, m.NetmapVersion)
		}
		if m.Delta == nil || !slices.ContainsFunc(m.Delta.Upsert, func(n control.Node) bool { return n.ID == gamma.NodeID && n.Online }) {
			t.Fatalf("resume from %s does not bring gamma online (changed on A after B's last version): %+v", since, m.Delta)
		}
	}
}

// TestReplicasPeerRelay: a peer relay offered through one replica is in
// the relay lists the other replica gives its agents, and leaves them when
// withdrawn there.
func TestReplicasPeerRelay(t *testing.T) {
	srv, _ := startReplicas(t, 2)
	a, b := srv[0], srv[1]
	key := newKey(t, a.store, true, 0)
	rl := mustRegister(t, a.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "relay", PublicKey: newPublicKey(t)})
	user := mustRegister(t, b.Handler(), control.RegisterRequest{AuthKey: key, Hostname: "user", PublicKey: newPublicKey(t)})
	waitHubMember(t, b.hub, rl.NodeID)
	if code, resp := offerRelay(t, a, rl.Credential, "192.0.2.1:40000", control.RelayOffer{Addr: "192.0.2.1:3478"}); code != http.StatusOK || !resp.Listed {
		t.Fatalf("offer on A: %d %+v", code, resp)
	}
	listed := func() bool {
		return slices.ContainsFunc(relaysFor(t, b, user.NodeID), func(r control.Relay) bool { return r.Node == rl.NodeID })
	}
	deadline := time.Now().Add(fanOutWithin)
	for !listed() {
		if time.Now().After(deadline) {
			t.Fatalf("relay offered on A not in B's list for its agent within %v", fanOutWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Withdrawn on A (an address the node does not come from).
	offerRelay(t, a, rl.Credential, "192.0.2.1:40000", control.RelayOffer{Addr: "192.0.2.99:3478"})
	deadline = time.Now().Add(fanOutWithin)
	for listed() {
		if time.Now().After(deadline) {
			t.Fatalf("relay withdrawn on A still in B's list after %v", fanOutWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

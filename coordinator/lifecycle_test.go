package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// readUntil reads stream messages until ok accepts one, failing after
// timeout. Online/offline deltas of other nodes may come in between.
func readUntil(t *testing.T, c *websocket.Conn, timeout time.Duration, ok func(control.Message) bool) control.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m := readMsg(t, c)
		if ok(m) {
			return m
		}
	}
	t.Fatalf("no matching message within %v", timeout)
	return control.Message{}
}

func isRemoveOf(id uint64) func(control.Message) bool {
	return func(m control.Message) bool {
		return m.Type == control.MsgDelta && m.Delta != nil && slices.Contains(m.Delta.Remove, id)
	}
}

// waitClosed reads c until the coordinator closes it and returns the code.
func waitClosed(t *testing.T, c *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			t.Fatalf("stream ended without a close frame: %v", err)
		}
	}
}

// registerStatus posts a register request to the real server and returns
// the status and error text.
func registerStatus(t *testing.T, base string, req control.RegisterRequest) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := http.Post(base+control.PathRegister, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e control.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

func streamRefusal(t *testing.T, base, cred string) (int, string) {
	t.Helper()
	_, resp, err := dialStreamErr(t, base, cred)
	if err == nil || resp == nil {
		t.Fatalf("stream with a refused credential was accepted (err %v)", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRemoveNodeReachesPeersAndRefusesCredential(t *testing.T) {
	dir := t.TempDir()
	s, base := startServer(t, dir)
	key := newKey(t, s.store, true, 0)
	var regs []control.RegisterResponse
	for _, n := range []string{"a", "b", "c"} {
		regs = append(regs, registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: n, PublicKey: newPublicKey(t)}))
	}
	var conns []*websocket.Conn
	for _, r := range regs {
		c := dialStream(t, base, r.Credential)
		if m := readMsg(t, c); m.Type != control.MsgNetmap {
			t.Fatalf("first frame %q", m.Type)
		}
		conns = append(conns, c)
	}
	if !s.nodeActive(regs[2].NodeID) {
		t.Fatal("c not active before removal")
	}
	var gone []uint64
	s.onNodeGone(func(id uint64) { gone = append(gone, id) })

	// The CLI path: the admin finds the running server by its lock and goes
	// through the socket.
	admin, err := OpenAdmin(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if !admin.Live() {
		t.Fatal("admin did not find the running server")
	}
	start := time.Now()
	rec, err := admin.RemoveNode(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != regs[2].NodeID {
		t.Fatalf("removed %d, want %d", rec.ID, regs[2].NodeID)
	}
	for i := 0; i < 2; i++ {
		readUntil(t, conns[i], 5*time.Second, isRemoveOf(rec.ID))
	}
	t.Logf("removal reached both peers %v after the command", time.Since(start))
	if code, reason := waitClosed(t, conns[2]); code != control.CloseNodeRemoved || reason != control.ReasonNodeRemoved {
		t.Fatalf("removed node's stream closed with %d %q", code, reason)
	}
	if s.nodeActive(rec.ID) || !slices.Equal(gone, []uint64{rec.ID}) {
		t.Fatalf("after removal: active %v, gone hooks %v", s.nodeActive(rec.ID), gone)
	}

	// Its credential is refused everywhere, saying why.
	code, msg := registerStatus(t, base, control.RegisterRequest{Credential: regs[2].Credential, PublicKey: strings.Repeat("A", 43) + "="})
	if code != http.StatusUnauthorized || msg != control.ReasonNodeRemoved {
		// The key differs, but "removed" is checked first.
		t.Fatalf("register with removed credential: %d %q", code, msg)
	}
	if code, body := streamRefusal(t, base, regs[2].Credential); code != http.StatusUnauthorized || !strings.Contains(body, "node removed") {
		t.Fatalf("stream with removed credential: %d %s", code, body)
	}
	// A forged credential with the removed node's ID learns nothing.
	if code, body := streamRefusal(t, base, strings.Split(regs[2].Credential, ".")[0]+".forged"); code != http.StatusUnauthorized || !strings.Contains(body, "invalid credential") {
		t.Fatalf("forged credential: %d %s", code, body)
	}
	nodes, err := s.store.NodeRecords(t.Context())
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes after removal: %v %v", nodes, err)
	}
	// Removing it again says so.
	if _, err := admin.RemoveNode(t.Context(), "c"); err == nil || !strings.Contains(err.Error(), "no such node") {
		t.Fatalf("second removal: %v", err)
	}
}

func TestExpireNodeAndRejoin(t *testing.T) {
	dir := t.TempDir()
	s, base := startServer(t, dir)
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	bKey := newNodeKey(t)
	bPub := bKey.pub
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: bPub})
	ca := dialStream(t, base, a.Credential)
	readMsg(t, ca)
	cb := dialStream(t, base, b.Credential)
	readMsg(t, cb)

	admin, err := OpenAdmin(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	rec, err := admin.ExpireNode(t.Context(), b.IP) // by overlay IP
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Expired() || rec.ID != b.NodeID {
		t.Fatalf("expire answered %+v", rec)
	}
	readUntil(t, ca, 5*time.Second, isRemoveOf(b.NodeID))
	if code, reason := waitClosed(t, cb); code != control.CloseNodeExpired {
		t.Fatalf("expired node's stream closed with %d %q", code, reason)
	}
	code, msg := registerStatus(t, base, control.RegisterRequest{Credential: b.Credential, PublicKey: bPub})
	if code != http.StatusUnauthorized || msg != control.ReasonNodeExpired {
		t.Fatalf("register with expired credential: %d %q", code, msg)
	}
	if code, body := streamRefusal(t, base, b.Credential); code != http.StatusUnauthorized || !strings.Contains(body, "node expired") {
		t.Fatalf("stream with expired credential: %d %s", code, body)
	}
	// The node is still listed, as expired; not in the live mesh.
	nodes, _ := s.store.ListNodes(t.Context())
	if len(nodes) != 1 {
		t.Fatalf("members after expiry: %v", nodes)
	}

	// Joining again with an auth key brings it back with its name and IP;
	// the peer sees it reappear.
	// It proves that it holds its key, as an agent does.
	rejoin := control.RegisterRequest{AuthKey: key, Credential: b.Credential, Hostname: "b", PublicKey: bPub}
	if code, msg := registerStatus(t, base, rejoin); code != http.StatusConflict {
		t.Fatalf("rejoin without proof: %d %q, want 409", code, msg)
	}
	again := registerHTTP(t, base, bKey.prove(t, fetchChallengeHTTP(t, base), rejoin))
	if again.NodeID != b.NodeID || again.IP != b.IP || again.Name != "b" || again.Credential == b.Credential {
		t.Fatalf("rejoin: %+v", again)
	}
	readUntil(t, ca, 5*time.Second, func(m control.Message) bool {
		_, ok := upsertOf(m, b.NodeID)
		return ok
	})
	dialStream(t, base, again.Credential)
}

func TestRenameNodeReachesPeers(t *testing.T) {
	dir := t.TempDir()
	s, base := startServer(t, dir)
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, a.Credential)
	readMsg(t, ca)
	if _, err := s.RenameNode(t.Context(), "b", "a"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("rename to a taken name: %v", err)
	}
	if _, err := s.RenameNode(t.Context(), "b", "Not Valid"); !errors.Is(err, errBadName) {
		t.Fatalf("rename to an invalid name: %v", err)
	}
	if _, err := s.RenameNode(t.Context(), "b", "db-1"); err != nil {
		t.Fatal(err)
	}
	m := readUntil(t, ca, 5*time.Second, func(m control.Message) bool {
		_, ok := upsertOf(m, b.NodeID)
		return ok
	})
	if n, _ := upsertOf(m, b.NodeID); n.Name != "db-1" {
		t.Fatalf("peer saw %+v", n)
	}
}

func TestEphemeralNodesRemovedWhenOffline(t *testing.T) {
	dir := t.TempDir()
	s, base := startServer(t, dir, func(s *Server) {
		s.life.ephemeral = newEphemeralTracker(300*time.Millisecond, 800*time.Millisecond)
	})
	k, err := s.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Reusable: true, Ephemeral: true, Tags: []string{"ci"}})
	if err != nil {
		t.Fatal(err)
	}
	perm := registerHTTP(t, base, control.RegisterRequest{AuthKey: newKey(t, s.store, true, 0), Hostname: "perm", PublicKey: newPublicKey(t)})
	cp := dialStream(t, base, perm.Credential)
	readMsg(t, cp)

	eph := registerHTTP(t, base, control.RegisterRequest{AuthKey: k.Key, Hostname: "eph", PublicKey: newPublicKey(t)})
	never := registerHTTP(t, base, control.RegisterRequest{AuthKey: k.Key, Hostname: "never", PublicKey: newPublicKey(t)})
	ce := dialStream(t, base, eph.Credential)
	readMsg(t, ce)
	// Online longer than the timeout: it stays.
	time.Sleep(500 * time.Millisecond)
	if !s.nodeActive(eph.NodeID) {
		t.Fatal("online ephemeral node was removed")
	}
	// The one that never connected goes after the grace period.
	start := time.Now()
	readUntil(t, cp, 5*time.Second, isRemoveOf(never.NodeID))
	t.Logf("never-connected ephemeral node removed %v after check start", time.Since(start))

	ce.Close(websocket.StatusNormalClosure, "bye")
	start = time.Now()
	readUntil(t, cp, 5*time.Second, isRemoveOf(eph.NodeID))
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("ephemeral node removed %v after going offline, before its timeout", d)
	}
	if code, body := streamRefusal(t, base, eph.Credential); code != http.StatusUnauthorized || !strings.Contains(body, "node removed") {
		t.Fatalf("removed ephemeral node's stream: %d %s", code, body)
	}
	time.Sleep(500 * time.Millisecond)
	if !s.nodeActive(perm.NodeID) {
		t.Fatal("permanent node was removed")
	}
}

func TestTagsReachPeers(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	k, err := s.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Reusable: true, Tags: []string{"server", "tag:db", "server"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.Tags, []string{"server", "tag:db"}) {
		t.Fatalf("tags normalised to %q", k.Tags)
	}
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: k.Key, Hostname: "a", PublicKey: newPublicKey(t)})
	registerHTTP(t, base, control.RegisterRequest{AuthKey: newKey(t, s.store, false, 0), Hostname: "b", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, a.Credential)
	m := readMsg(t, ca)
	if !slices.Equal(m.Netmap.Self.Tags, k.Tags) || len(m.Netmap.Peers) != 1 || m.Netmap.Peers[0].Tags != nil {
		t.Fatalf("netmap self %+v peers %+v", m.Netmap.Self, m.Netmap.Peers)
	}
	for _, bad := range [][]string{{""}, {"UPPER"}, {"-x"}, {"a,b"}, {strings.Repeat("a", 64)}} {
		if _, err := s.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Tags: bad}); err == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
}

func TestRevokedAuthKey(t *testing.T) {
	s := newTestServer(t)
	k, err := s.store.CreateAuthKeyWith(t.Context(), AuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.RevokeAuthKey(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	code, _, e := register(t, s.Handler(), control.RegisterRequest{AuthKey: k.Key, PublicKey: newPublicKey(t)})
	if code != http.StatusUnauthorized || e.Error != ErrAuthKeyRevoked.Error() {
		t.Fatalf("revoked key: %d %q", code, e.Error)
	}
	if err := s.store.RevokeAuthKey(t.Context(), 999); !errors.Is(err, ErrAuthKeyNotFound) {
		t.Fatalf("revoke unknown key: %v", err)
	}
	keys, err := s.store.ListAuthKeys(t.Context())
	if err != nil || len(keys) != 1 || keys[0].State(time.Now()) != "revoked" {
		t.Fatalf("list: %+v %v", keys, err)
	}
}

func TestAuthFailuresRateLimited(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t), AuthFailBurst: 3, AuthFailPerMinute: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	good := newKey(t, s.store, true, 0)
	bad := AuthKeyPrefix + strings.Repeat("x", 43)
	post := func(remote, key string) *http.Response {
		body := `{"auth_key":"` + key + `","hostname":"h","public_key":"` + newPublicKey(t) + `"}`
		rec := newRecorder(h, remote, body)
		return rec
	}
	// A success costs nothing.
	if r := post("192.0.2.7:1000", good); r.StatusCode != http.StatusOK {
		t.Fatalf("good key: %d", r.StatusCode)
	}
	for i := range 3 {
		if r := post("192.0.2.7:1000", bad); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad key %d: %d", i, r.StatusCode)
		}
	}
	r := post("192.0.2.7:1001", good)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after the burst: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	t.Logf("Retry-After: %s s", r.Header.Get("Retry-After"))
	// Other addresses are not affected.
	if r := post("192.0.2.8:1000", good); r.StatusCode != http.StatusOK {
		t.Fatalf("other address: %d", r.StatusCode)
	}
	// The budget refills: with a token back, the address may try again.
	s.limiter.keyed.Refund("192.0.2.7")
	if r := post("192.0.2.7:1000", good); r.StatusCode != http.StatusOK {
		t.Fatalf("after refill: %d", r.StatusCode)
	}
}

func TestSignalsOnlyBetweenMembers(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, a.Credential)
	readMsg(t, ca)
	// From a node that is not a member (removed a moment ago, say): dropped.
	s.hub.Signal(4242, control.Signal{To: a.NodeID, Kind: control.SignalOffer, Session: "x"})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	s.hub.Signal(b.NodeID, control.Signal{To: a.NodeID, Kind: control.SignalOffer, Session: "y"})
	m := readUntil(t, ca, 5*time.Second, func(m control.Message) bool { return m.Type == control.MsgSignal })
	if m.Signal.From != b.NodeID || m.Signal.Session != "y" {
		t.Fatalf("got signal %+v, want only the member's", m.Signal)
	}
}

func TestAdminDirectWhenNotServing(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := st.CreateAuthKey(t.Context(), true, 0)
	reg, err := st.Register(t.Context(), control.RegisterRequest{AuthKey: k.Key, Hostname: "x", PublicKey: newPublicKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	defer func(w time.Duration) { lockWait = w }(lockWait)
	lockWait = 300 * time.Millisecond
	admin, err := OpenAdmin(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if admin.Live() {
		t.Fatal("no server runs, yet the admin is live")
	}
	// A server cannot start while the admin writes directly.
	if _, err := lockServe(dir); err == nil {
		t.Fatal("server lock taken while an admin holds the shared lock")
	}
	if _, err := admin.RemoveNode(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	admin.Close()

	srv, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.nodeActive(reg.Node.ID) {
		t.Fatal("a node removed offline is active after start")
	}
	// A second server on the same dir is refused.
	if _, err := New(Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server: %v", err)
	}
}

func TestStreamOversizedFrameCloses(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: newKey(t, s.store, true, 0), Hostname: "a", PublicKey: newPublicKey(t)})
	c := dialStream(t, base, a.Credential)
	readMsg(t, c)
	big := `{"type":"signal","signal":{"to":1,"candidate":"` + strings.Repeat("x", streamReadLimit) + `"}}`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(big)); err != nil {
		t.Fatal(err)
	}
	if code, _ := waitClosed(t, c); code != websocket.StatusMessageTooBig {
		t.Fatalf("oversized frame: closed with %d, want %d", code, websocket.StatusMessageTooBig)
	}
}

func TestRegisterRequestLimits(t *testing.T) {
	s := newTestServer(t)
	h := s.Handler()
	key := newKey(t, s.store, true, 0)
	send := func(ct, body string) (int, string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, control.PathRegister, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		h.ServeHTTP(rec, req)
		var e control.Error
		json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, e.Error
	}
	ok := `{"auth_key":"` + key + `","hostname":"a","public_key":"` + newPublicKey(t) + `"}`
	for _, tc := range []struct {
		ct, body string
		code     int
		msg      string
	}{
		{"application/json", `{"hostname":"` + strings.Repeat("a", control.MaxRequestBody) + `"}`, http.StatusRequestEntityTooLarge, "too large"},
		{"text/plain", ok, http.StatusUnsupportedMediaType, "Content-Type"},
		{"application/json", `{"auth_key":`, http.StatusBadRequest, "malformed JSON"},
		{"application/json; charset=utf-8", ok, http.StatusOK, ""},
	} {
		code, msg := send(tc.ct, tc.body)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s body of %d bytes: %d %q, want %d %q", tc.ct, len(tc.body), code, msg, tc.code, tc.msg)
		}
	}
}

// upsertOf finds node id among a delta's upserts; deltas are batched, so
// other nodes (the reader's own, say) may ride along.
func upsertOf(m control.Message, id uint64) (control.Node, bool) {
	if m.Type != control.MsgDelta || m.Delta == nil {
		return control.Node{}, false
	}
	for _, n := range m.Delta.Upsert {
		if n.ID == id {
			return n, true
		}
	}
	return control.Node{}, false
}

package coordinator

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jackc/pgx/v5"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// TestReplicaSignalRecheckedUnderPolicy: a signal that another replica
// forwards is checked again by the replica holding the receiver's stream.
// The sending replica checks the pair too, but its view of the policy can
// lag (a policy set on the receiver's replica, whose notification the
// sender has not applied yet, or a sender whose listener is reconnecting):
// then only the receiving replica stands between a member and a node the
// policy keeps it from. The test plays that lagging replica: it puts
// alpha's forwarded signal on the database's notification channel as
// replica A would, and gamma, on replica B, must not get it once a policy
// set through B keeps the two apart; B counts the drop.
func TestReplicaSignalRecheckedUnderPolicy(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	withMetrics := func(s *Server) { s.cfg.MetricsListen = "127.0.0.1:0" }
	a, baseA := startReplica(t, url)
	b, baseB := startReplica(t, url, withMetrics)
	ctx := t.Context()
	key := newKey(t, a.store, true, 0)
	alpha := registerHTTP(t, baseA, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	gamma := registerHTTP(t, baseB, control.RegisterRequest{AuthKey: key, Hostname: "gamma", PublicKey: newPublicKey(t)})
	ca := dialStream(t, baseA, alpha.Credential)
	readMsg(t, ca)
	cg := dialStream(t, baseB, gamma.Credential)
	if m := readMsg(t, cg); m.Type != control.MsgNetmap {
		t.Fatalf("gamma's first frame: %+v", m)
	}

	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	// forwardFromA sends what replica A sends for a signal from alpha to
	// gamma (replicaLink.forward).
	forwardFromA := func(session string) {
		t.Helper()
		sig := control.Signal{From: alpha.NodeID, To: gamma.NodeID, Kind: control.SignalOffer, Session: session, Ufrag: "u", Pwd: "p"}
		frame, err := json.Marshal(control.Message{Type: control.MsgSignal, Signal: &sig})
		if err != nil {
			t.Fatal(err)
		}
		note := noteSignal + " " + a.store.replica + " " + strconv.FormatUint(alpha.NodeID, 10) + " " + strconv.FormatUint(gamma.NodeID, 10) + " " + string(frame)
		if _, err := db.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, note); err != nil {
			t.Fatal(err)
		}
	}
	isSignal := func(session string) func(control.Message) bool {
		return func(m control.Message) bool {
			return m.Type == control.MsgSignal && m.Signal != nil && m.Signal.From == alpha.NodeID && m.Signal.Session == session
		}
	}

	// Without a policy the forwarded signal arrives: the path works. The
	// wait is longer than fanOutWithin: this checks the path, not its
	// speed (TestReplicasFanOut does), and a loaded machine running the
	// unit tests in parallel once took more than 1 s.
	forwardFromA("before")
	awaitFrame(t, cg, 5*time.Second, "alpha's forwarded signal at gamma, no policy", isSignal("before"))

	if err := b.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["lonely:*"]}]}`)); err != nil {
		t.Fatal(err)
	}
	awaitFrame(t, cg, fanOutWithin, "policy at gamma", isRemoveOf(alpha.NodeID))
	dropped := `meshvpn_coordinator_signals_total{result="dropped"}`
	before := scrapeMetrics(t, b)[dropped]

	forwardFromA("after")
	// Nothing from alpha may reach gamma; wait long enough for a
	// delivery to have happened (fanOutWithin).
	rctx, cancel := context.WithTimeout(ctx, fanOutWithin)
	defer cancel()
	for {
		var m control.Message
		if err := wsjson.Read(rctx, cg, &m); err != nil {
			if rctx.Err() == nil {
				t.Fatalf("gamma's stream: %v", err)
			}
			break
		}
		if isSignal("after")(m) {
			t.Fatalf("gamma received alpha's signal although the policy keeps them apart: %+v", *m.Signal)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for scrapeMetrics(t, b)[dropped] < before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("replica B counted no dropped signal (%s stays %v)", dropped, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cg.Close(websocket.StatusNormalClosure, "")
}

package coordinator

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/metrics"
)

func scrapeMetrics(t *testing.T, s *Server) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr().String() + metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, err := metrics.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMetricsMove drives registrations, streams, signals and STUN through
// a running server and checks each counter and gauge on its endpoint.
func TestMetricsMove(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) { s.cfg.MetricsListen = "127.0.0.1:0" })
	if s.MetricsAddr() == nil {
		t.Fatal("metrics endpoint not listening")
	}
	m := scrapeMetrics(t, s)
	for _, k := range []string{"meshvpn_coordinator_nodes", "meshvpn_coordinator_streams", "meshvpn_coordinator_stun_requests_total", "meshvpn_coordinator_delta_frames_total"} {
		if v, ok := m[k]; !ok || v != 0 {
			t.Fatalf("fresh server: %s = %v (present %v)", k, v, ok)
		}
	}

	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "a", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "b", PublicKey: newPublicKey(t)})
	registerHTTP(t, base, control.RegisterRequest{Credential: a.Credential, PublicKey: mustPublicKeyOf(t, s, a.NodeID)})
	if code, _, _ := register(t, s.Handler(), control.RegisterRequest{AuthKey: "wrong", Hostname: "c", PublicKey: newPublicKey(t)}); code != http.StatusUnauthorized {
		t.Fatalf("bad key: %d", code)
	}
	ca := dialStream(t, base, a.Credential)
	readMsg(t, ca)
	cb := dialStream(t, base, b.Credential)
	readMsg(t, cb)
	readUpsert(t, ca, b.NodeID)
	sig := control.Signal{To: a.NodeID, Kind: control.SignalOffer, Session: "s"}
	if err := wsjson.Write(t.Context(), cb, control.Message{Type: control.MsgSignal, Signal: &sig}); err != nil {
		t.Fatal(err)
	}
	readMsg(t, ca)
	wsjson.Write(t.Context(), cb, control.Message{Type: control.MsgSignal, Signal: &control.Signal{To: 999, Kind: "offer"}})

	conn, err := net.Dial("udp", s.STUNAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("stun: %v", err)
	}

	want := map[string]float64{
		"meshvpn_coordinator_nodes":                                    2,
		"meshvpn_coordinator_nodes_online":                             2,
		"meshvpn_coordinator_streams":                                  2,
		`meshvpn_coordinator_registrations_total{result="created"}`:    2,
		`meshvpn_coordinator_registrations_total{result="readmitted"}`: 1,
		`meshvpn_coordinator_registrations_total{result="refused"}`:    1,
		`meshvpn_coordinator_signals_total{result="forwarded"}`:        1,
		"meshvpn_coordinator_netmaps_total":                            2,
		"meshvpn_coordinator_stun_requests_total":                      1,
	}
	// The dropped signal and the last batch land a moment later: poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m = scrapeMetrics(t, s)
		bad := ""
		for k, w := range want {
			if m[k] != w {
				bad = k
			}
		}
		if m[`meshvpn_coordinator_signals_total{result="dropped"}`] < 1 {
			bad = "dropped signals"
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %v; all: %v", bad, m[bad], m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m["meshvpn_coordinator_delta_frames_total"] < 1 || m["meshvpn_coordinator_delta_batches_total"] < 1 ||
		m["meshvpn_coordinator_netmap_bytes"] < 100 || m["go_goroutines"] < 1 {
		t.Fatalf("delta and runtime metrics did not move: %v", m)
	}

	// b leaves: online and stream gauges fall.
	cb.Close(websocket.StatusNormalClosure, "")
	readUpsert(t, ca, b.NodeID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		m = scrapeMetrics(t, s)
		if m["meshvpn_coordinator_nodes_online"] == 1 && m["meshvpn_coordinator_streams"] == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after b left: %v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustPublicKeyOf(t *testing.T, s *Server, id uint64) string {
	t.Helper()
	nodes, err := s.store.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n.PublicKey
		}
	}
	t.Fatalf("node %d not stored", id)
	return ""
}

package agent

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/meshvpn/meshvpn/internal/metrics"
)

// TestAgentMetricsFollowStatus scrapes the endpoint twice while the status
// behind it changes and checks the samples move with it.
func TestAgentMetricsFollowStatus(t *testing.T) {
	now := time.Now().UTC()
	st := Status{
		Coordinator: CoordinatorStatus{Connected: true},
		Peers: []PeerStatus{
			{ID: 2, Name: "b", PublicKey: "SECRETKEYb", Path: PathDirect, RxBytes: 100, TxBytes: 50, LastHandshake: now.Add(-30 * time.Second).Format(time.RFC3339)},
			{ID: 3, Name: "c", PublicKey: "SECRETKEYc", Path: PathRelay, RxBytes: 7},
			{ID: 4, Name: "d", Path: PathNone},
		},
	}
	m := newAgentMetrics(func() Status { return st })
	srv, err := metrics.Listen("127.0.0.1:0", m.reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	scrape := func() (map[string]float64, string) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr().String() + metrics.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := metrics.Parse(strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		return vals, string(body)
	}

	v, body := scrape()
	if strings.Contains(body, "SECRETKEY") {
		t.Fatal("public key exposed in metrics")
	}
	want := map[string]float64{
		`meshvpn_agent_peers{path="direct"}`:                      1,
		`meshvpn_agent_peers{path="relay"}`:                       1,
		`meshvpn_agent_peers{path="none"}`:                        1,
		`meshvpn_agent_peer_rx_bytes_total{peer_id="2",peer="b"}`: 100,
		`meshvpn_agent_peer_tx_bytes_total{peer_id="2",peer="b"}`: 50,
		`meshvpn_agent_peer_rx_bytes_total{peer_id="3",peer="c"}`: 7,
		`meshvpn_agent_coordinator_connected`:                     1,
		`meshvpn_agent_ice_failures_total`:                        0,
		`meshvpn_agent_peer_direct{peer_id="3",peer="c"}`:         0,
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, w)
		}
	}
	if age := v[`meshvpn_agent_peer_handshake_age_seconds{peer_id="2",peer="b"}`]; age < 29 || age > 120 {
		t.Errorf("handshake age %v, want about 30", age)
	}
	if _, ok := v[`meshvpn_agent_peer_handshake_age_seconds{peer_id="3",peer="c"}`]; ok {
		t.Error("handshake age for a peer that never shook hands")
	}

	// Traffic flows, c goes direct, ICE fails once: the next scrape shows it.
	st.Peers[0].RxBytes = 5000
	st.Peers[1].Path = PathDirect
	st.Coordinator.Connected = false
	m.iceFailures.Inc()
	m.iceRestarts.Add(2)
	m.mu.Lock()
	m.lastAt = time.Time{} // past the snapshot cache
	m.mu.Unlock()
	v, _ = scrape()
	want = map[string]float64{
		`meshvpn_agent_peers{path="direct"}`:                      2,
		`meshvpn_agent_peers{path="relay"}`:                       0,
		`meshvpn_agent_peer_rx_bytes_total{peer_id="2",peer="b"}`: 5000,
		`meshvpn_agent_coordinator_connected`:                     0,
		`meshvpn_agent_ice_failures_total`:                        1,
		`meshvpn_agent_ice_restarts_total`:                        2,
	}
	for k, w := range want {
		if got := v[k]; got != w {
			t.Errorf("after change: %s = %v, want %v", k, got, w)
		}
	}
}

package agent

import (
	"strconv"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/internal/metrics"
)

// agentMetrics are the agent's Prometheus metrics. Per-peer samples are
// labelled with the peer's node ID and name, never its key. They are
// computed from one Status snapshot per scrape (cached briefly, since each
// family would otherwise ask WireGuard for its counters again).
type agentMetrics struct {
	reg         *metrics.Registry
	iceFailures *metrics.Vec
	iceRestarts *metrics.Vec

	status func() Status
	mu     sync.Mutex
	last   Status
	lastAt time.Time
}

// statusTTL is how long one Status snapshot serves a scrape's families.
const statusTTL = 500 * time.Millisecond

func newAgentMetrics(status func() Status) *agentMetrics {
	r := metrics.NewRegistry()
	m := &agentMetrics{reg: r, status: status}
	metrics.RegisterGoRuntime(r)
	m.iceFailures = r.Counter("meshvpn_agent_ice_failures_total",
		"ICE sessions that ended in the failed state.")
	m.iceRestarts = r.Counter("meshvpn_agent_ice_restarts_total",
		"ICE sessions replaced or restart requests sent after a failure, timeout or path loss.")
	r.GaugeFunc("meshvpn_agent_coordinator_connected", "1 while the stream to the coordinator is up.", nil,
		func() []metrics.Sample {
			v := 0.0
			if m.snapshot().Coordinator.Connected {
				v = 1
			}
			return []metrics.Sample{{Value: v}}
		})
	r.GaugeFunc("meshvpn_agent_peers", "Peers by the path their packets take: direct, relay, none, or idle (set up on demand).", []string{"path"},
		func() []metrics.Sample {
			count := map[string]float64{PathDirect: 0, PathRelay: 0, PathNone: 0, PathIdle: 0}
			for _, p := range m.snapshot().Peers {
				count[p.Path]++
			}
			out := make([]metrics.Sample, 0, len(count))
			for path, n := range count {
				out = append(out, metrics.Sample{Labels: []string{path}, Value: n})
			}
			return out
		})
	perPeer := func(f func(p PeerStatus) (float64, bool)) func() []metrics.Sample {
		return func() []metrics.Sample {
			var out []metrics.Sample
			for _, p := range m.snapshot().Peers {
				if v, ok := f(p); ok {
					out = append(out, metrics.Sample{Labels: []string{strconv.FormatUint(p.ID, 10), p.Name}, Value: v})
				}
			}
			return out
		}
	}
	peerLabels := []string{"peer_id", "peer"}
	r.CounterFunc("meshvpn_agent_peer_rx_bytes_total", "Bytes received from the peer through WireGuard.", peerLabels,
		perPeer(func(p PeerStatus) (float64, bool) { return float64(p.RxBytes), true }))
	r.CounterFunc("meshvpn_agent_peer_tx_bytes_total", "Bytes sent to the peer through WireGuard.", peerLabels,
		perPeer(func(p PeerStatus) (float64, bool) { return float64(p.TxBytes), true }))
	r.GaugeFunc("meshvpn_agent_peer_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with the peer; absent before the first.", peerLabels,
		perPeer(func(p PeerStatus) (float64, bool) {
			t, err := time.Parse(time.RFC3339, p.LastHandshake)
			if err != nil {
				return 0, false
			}
			return max(0, time.Since(t).Seconds()), true
		}))
	r.CounterFunc("meshvpn_agent_peer_policy_dropped_packets_total",
		"Packets the access policy dropped, by peer and direction (in: from the peer, out: to it).",
		[]string{"peer_id", "peer", "direction"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, p := range m.snapshot().Peers {
				id := strconv.FormatUint(p.ID, 10)
				out = append(out,
					metrics.Sample{Labels: []string{id, p.Name, "in"}, Value: float64(p.PolicyDropsIn)},
					metrics.Sample{Labels: []string{id, p.Name, "out"}, Value: float64(p.PolicyDropsOut)})
			}
			return out
		})
	r.GaugeFunc("meshvpn_agent_peer_direct", "1 if the peer's path is direct, 0 if relayed or none.", peerLabels,
		perPeer(func(p PeerStatus) (float64, bool) {
			if p.Path == PathDirect {
				return 1, true
			}
			return 0, true
		}))
	return m
}

func (m *agentMetrics) snapshot() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(m.lastAt) > statusTTL {
		m.last, m.lastAt = m.status(), time.Now()
	}
	return m.last
}

// countICEFailure and countICERestart are safe on an Agent without metrics
// (tests build bare ones).
func (a *Agent) countICEFailure() {
	if a.metrics != nil {
		a.metrics.iceFailures.Inc()
	}
}

func (a *Agent) countICERestart() {
	if a.metrics != nil {
		a.metrics.iceRestarts.Inc()
	}
}

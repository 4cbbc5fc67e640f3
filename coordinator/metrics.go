package coordinator

import (
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/internal/metrics"
)

// serverMetrics are the coordinator's Prometheus metrics. Labels carry only
// bounded enumerations (results, reasons), never node names, keys or
// credentials.
type serverMetrics struct {
	reg           *metrics.Registry
	registrations *metrics.Vec
	// hub are the hub's counters (signals, deltas, netmaps).
	hub          *hub.Metrics
	stunRequests *metrics.Vec
	connsRefused *metrics.Vec
}

func newServerMetrics() *serverMetrics {
	r := metrics.NewRegistry()
	metrics.RegisterGoRuntime(r)
	m := &serverMetrics{
		reg: r,
		registrations: r.Counter("meshvpn_coordinator_registrations_total",
			"Registration requests by result: created (new node), readmitted (known node), invalid (malformed request), refused (bad key or credential, conflict, mesh full), rate_limited (over the auth key's join budget), error.", "result"),
	}
	m.hub = hub.NewMetrics(r)
	m.stunRequests = r.Counter("meshvpn_coordinator_stun_requests_total",
		"STUN binding requests answered.")
	m.connsRefused = r.Counter("meshvpn_coordinator_connections_refused_total",
		"API connections closed on accept: too many open from one source address.")
	return m
}

// registerHubGauges adds the gauges read from the hub at scrape time.
func (m *serverMetrics) registerHubGauges(h *hub.Hub) {
	one := func(f func() float64) func() []metrics.Sample {
		return func() []metrics.Sample { return []metrics.Sample{{Value: f()}} }
	}
	m.reg.GaugeFunc("meshvpn_coordinator_nodes", "Nodes registered.", nil, one(func() float64 {
		return float64(h.Counts().Nodes)
	}))
	m.reg.GaugeFunc("meshvpn_coordinator_nodes_online", "Nodes with a connected stream.", nil, one(func() float64 {
		return float64(h.Counts().Online)
	}))
	m.reg.GaugeFunc("meshvpn_coordinator_streams", "Open agent streams.", nil, one(func() float64 {
		return float64(h.Counts().Streams)
	}))
}

// Metrics is the coordinator's metrics registry, for serving elsewhere.
func (s *Server) Metrics() *metrics.Registry { return s.metrics.reg }

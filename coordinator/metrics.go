package coordinator

import (
	"github.com/meshvpn/meshvpn/internal/metrics"
)

// serverMetrics are the coordinator's Prometheus metrics. Labels carry only
// bounded enumerations (results, reasons), never node names, keys or
// credentials.
type serverMetrics struct {
	reg            *metrics.Registry
	registrations  *metrics.Vec
	signals        *metrics.Vec
	deltaBatches   *metrics.Vec
	deltaNodes     *metrics.Vec
	deltaFrames    *metrics.Vec
	netmaps        *metrics.Vec
	resumes        *metrics.Vec
	resumeMisses   *metrics.Vec
	netmapBytes    *metrics.Vec
	streamsDropped *metrics.Vec
	stunRequests   *metrics.Vec
	connsRefused   *metrics.Vec
}

func newServerMetrics() *serverMetrics {
	r := metrics.NewRegistry()
	metrics.RegisterGoRuntime(r)
	return &serverMetrics{
		reg: r,
		registrations: r.Counter("meshvpn_coordinator_registrations_total",
			"Registration requests by result: created (new node), readmitted (known node), invalid (malformed request), refused (bad key or credential, conflict, mesh full), rate_limited (over the auth key's join budget), error.", "result"),
		signals: r.Counter("meshvpn_coordinator_signals_total",
			"ICE signals from agents by result: forwarded to the target's stream; forwarded_replica (to the replica holding the target's stream); dropped (target offline or not a peer); oversize, malformed or invalid (refused frames); rate_limited (over the sender's budget); queue_full (the receiver's queue was busy).", "result"),
		deltaBatches: r.Counter("meshvpn_coordinator_delta_batches_total",
			"Batches of node changes sent as one delta to every stream."),
		deltaNodes: r.Counter("meshvpn_coordinator_delta_nodes_total",
			"Node changes (upserts and removals) carried by delta batches."),
		deltaFrames: r.Counter("meshvpn_coordinator_delta_frames_total",
			"Delta frames queued to agent streams (the fan-out of the batches)."),
		netmaps: r.Counter("meshvpn_coordinator_netmaps_total",
			"Full netmaps sent to newly connected streams."),
		resumes: r.Counter("meshvpn_coordinator_resumes_total",
			"Reconnecting streams sent only the changes since the netmap version they held."),
		resumeMisses: r.Counter("meshvpn_coordinator_resume_misses_total",
			"Reconnecting streams that named a netmap version and got a full netmap, by reason: epoch (not this coordinator's series), foreign (another replica's version the store cannot bring up to date), ahead (newer than the coordinator's), ring (older than the batches it keeps), too_many (more nodes changed than half the mesh).", "reason"),
		netmapBytes: r.Gauge("meshvpn_coordinator_netmap_bytes",
			"Size of the last full netmap frame sent."),
		streamsDropped: r.Counter("meshvpn_coordinator_streams_dropped_total",
			"Streams closed because the agent did not drain its send queue."),
		stunRequests: r.Counter("meshvpn_coordinator_stun_requests_total",
			"STUN binding requests answered."),
		connsRefused: r.Counter("meshvpn_coordinator_connections_refused_total",
			"API connections closed on accept: too many open from one source address."),
	}
}

// registerHubGauges adds the gauges read from the hub at scrape time.
func (m *serverMetrics) registerHubGauges(h *hub) {
	one := func(f func() float64) func() []metrics.Sample {
		return func() []metrics.Sample { return []metrics.Sample{{Value: f()}} }
	}
	m.reg.GaugeFunc("meshvpn_coordinator_nodes", "Nodes registered.", nil, one(func() float64 {
		n, _, _ := h.counts()
		return float64(n)
	}))
	m.reg.GaugeFunc("meshvpn_coordinator_nodes_online", "Nodes with a connected stream.", nil, one(func() float64 {
		_, n, _ := h.counts()
		return float64(n)
	}))
	m.reg.GaugeFunc("meshvpn_coordinator_streams", "Open agent streams.", nil, one(func() float64 {
		_, _, n := h.counts()
		return float64(n)
	}))
}

// Metrics is the coordinator's metrics registry, for serving elsewhere.
func (s *Server) Metrics() *metrics.Registry { return s.metrics.reg }

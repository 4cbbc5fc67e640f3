package hub

import "github.com/meshvpn/meshvpn/internal/metrics"

// Metrics are the counters the hub moves. The server registers them with
// its other metrics (NewMetrics), so their names stay the coordinator's.
type Metrics struct {
	// Signals counts ICE signals by result (see the help text).
	Signals        *metrics.Vec
	DeltaBatches   *metrics.Vec
	DeltaNodes     *metrics.Vec
	DeltaFrames    *metrics.Vec
	Netmaps        *metrics.Vec
	Resumes        *metrics.Vec
	ResumeMisses   *metrics.Vec
	NetmapBytes    *metrics.Vec
	StreamsDropped *metrics.Vec
}

// NewMetrics registers the hub's metrics in r (a registry of their own if
// r is nil).
func NewMetrics(r *metrics.Registry) *Metrics {
	if r == nil {
		r = metrics.NewRegistry()
	}
	return &Metrics{
		Signals: r.Counter("meshvpn_coordinator_signals_total",
			"ICE signals from agents by result: forwarded to the target's stream; forwarded_replica (to the replica holding the target's stream); dropped (target offline or not a peer); oversize, malformed or invalid (refused frames); rate_limited (over the sender's budget); queue_full (the receiver's queue was busy).", "result"),
		DeltaBatches: r.Counter("meshvpn_coordinator_delta_batches_total",
			"Batches of node changes sent as one delta to every stream."),
		DeltaNodes: r.Counter("meshvpn_coordinator_delta_nodes_total",
			"Node changes (upserts and removals) carried by delta batches."),
		DeltaFrames: r.Counter("meshvpn_coordinator_delta_frames_total",
			"Delta frames queued to agent streams (the fan-out of the batches)."),
		Netmaps: r.Counter("meshvpn_coordinator_netmaps_total",
			"Full netmaps sent to newly connected streams."),
		Resumes: r.Counter("meshvpn_coordinator_resumes_total",
			"Reconnecting streams sent only the changes since the netmap version they held."),
		ResumeMisses: r.Counter("meshvpn_coordinator_resume_misses_total",
			"Reconnecting streams that named a netmap version and got a full netmap, by reason: epoch (not this coordinator's series), foreign (another replica's version the store cannot bring up to date), ahead (newer than the coordinator's), ring (older than the batches it keeps), too_many (more nodes changed than half the mesh).", "reason"),
		NetmapBytes: r.Gauge("meshvpn_coordinator_netmap_bytes",
			"Size of the last full netmap frame sent."),
		StreamsDropped: r.Counter("meshvpn_coordinator_streams_dropped_total",
			"Streams closed because the agent did not drain its send queue."),
	}
}

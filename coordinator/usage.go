package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/meshvpn/meshvpn/coordinator/admin"
	"github.com/meshvpn/meshvpn/internal/metrics"
	"github.com/meshvpn/meshvpn/relay"
)

// UsageReport is relay usage per node and relay, as the usage command
// prints it.
type UsageReport struct {
	// From and To bound the window counted: since the coordinator started,
	// or --since rounded out to whole history buckets.
	From time.Time  `json:"from"`
	To   time.Time  `json:"to"`
	Rows []UsageRow `json:"rows"`
}

// UsageRow is one node's usage of one relay. A relay that reports nothing
// (an external TURN server) has Reported false and null counts: unknown,
// not zero. In is what the relay passed to the node from its peers, Out
// what it passed from the node to its peers; bytes are relayed UDP
// payloads, without the TURN framing.
type UsageRow struct {
	NodeID     uint64  `json:"node_id"`
	Node       string  `json:"node"` // name; empty for a node no longer in the mesh
	Relay      string  `json:"relay"`
	Reported   bool    `json:"reported"`
	BytesIn    *uint64 `json:"bytes_in"`
	PacketsIn  *uint64 `json:"packets_in"`
	BytesOut   *uint64 `json:"bytes_out"`
	PacketsOut *uint64 `json:"packets_out"`
	// ReportedAt is when a peer relay last reported: its counts lag by up
	// to the report interval (30 s). Absent for the embedded relay, which
	// counts live.
	ReportedAt *time.Time `json:"reported_at,omitempty"`
}

// EmbeddedRelay names the embedded relay in usage reports.
const EmbeddedRelay = "embedded"

// RelayUsage reports relay usage per node over the last since (0: since
// the coordinator started): a row per member and relay, and one for each
// node no longer in the mesh that relayed in the window.
func (s *Server) RelayUsage(since time.Duration, now time.Time) (UsageReport, error) {
	rep := UsageReport{From: now, To: now, Rows: []UsageRow{}}
	var counts map[uint64]relay.Counts
	if s.usage != nil {
		var err error
		if counts, rep.From, err = s.usage.Usage(since, now); err != nil {
			return UsageReport{}, err
		}
	} else {
		rep.From = s.started
		if since > 0 {
			rep.From = now.Add(-since)
		}
	}
	var relays []string
	if s.usage != nil {
		relays = append(relays, EmbeddedRelay)
	}
	relays = append(relays, s.cfg.TURN.URLs...)
	names := map[uint64]string{}
	for _, n := range s.hub.Nodes() {
		names[n.ID] = n.Name
	}
	ids := make([]uint64, 0, len(names)+len(counts))
	for id := range names {
		ids = append(ids, id)
	}
	for id := range counts {
		if _, ok := names[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, r := range relays {
			row := UsageRow{NodeID: id, Node: names[id], Relay: r}
			if r == EmbeddedRelay {
				c := counts[id]
				row.Reported = true
				row.BytesIn, row.PacketsIn, row.BytesOut, row.PacketsOut = &c.BytesIn, &c.PacketsIn, &c.BytesOut, &c.PacketsOut
			}
			rep.Rows = append(rep.Rows, row)
		}
	}
	peerRows, err := s.peerUsageRows(ids, names, since, now)
	if err != nil {
		return UsageReport{}, err
	}
	rep.Rows = append(rep.Rows, peerRows...)
	return rep, nil
}

func (s *Server) adminUsageRoute(mux *http.ServeMux) {
	mux.HandleFunc("GET "+admin.PathUsage, func(w http.ResponseWriter, r *http.Request) {
		var since time.Duration
		if v := r.URL.Query().Get("since"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				writeError(w, http.StatusBadRequest, "since: want a positive duration such as 30m or 2h")
				return
			}
			since = d
		}
		rep, err := s.RelayUsage(since, time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}

var errUsageOffline = errors.New("relay usage is kept in the running coordinator's memory, and no coordinator is running on this state directory")

// RelayUsage asks the running server for relay usage over the last since
// (0: since it started).
func (a *Admin) RelayUsage(ctx context.Context, since time.Duration) (UsageReport, error) {
	if a.store != nil {
		return UsageReport{}, errUsageOffline
	}
	path := admin.PathUsage
	if since > 0 {
		path += "?since=" + since.String()
	}
	data, err := a.raw(ctx, http.MethodGet, path, nil)
	if err != nil {
		return UsageReport{}, err
	}
	var rep UsageReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return UsageReport{}, fmt.Errorf("admin socket: decode usage: %w", err)
	}
	return rep, nil
}

// registerRelayUsage exports the embedded relay's usage per member node
// (label node: its ID; direction in or out, as in UsageRow). Nodes that
// left the mesh are not exported, so the series are bounded by the mesh.
func (m *serverMetrics) registerRelayUsage(l *relay.Ledger, member func(uint64) bool) {
	collect := func(bytes bool) func() []metrics.Sample {
		return func() []metrics.Sample {
			counts, _, err := l.Usage(0, time.Now())
			if err != nil {
				return nil
			}
			return usageSamples(counts, member, bytes)
		}
	}
	labels := []string{"node", "direction"}
	m.reg.CounterFunc("meshvpn_coordinator_relay_bytes_total",
		"Bytes the embedded relay passed for a member node: direction out from the node to its peers, in from its peers to the node (relayed UDP payloads, without TURN framing).", labels, collect(true))
	m.reg.CounterFunc("meshvpn_coordinator_relay_packets_total",
		"Packets the embedded relay passed for a member node, by direction as for meshvpn_coordinator_relay_bytes_total.", labels, collect(false))
}

// usageSamples are the samples of counts for member nodes, in order of
// node ID, each labelled lead..., node ID, direction in or out; bytes picks
// bytes over packets.
func usageSamples(counts map[uint64]relay.Counts, member func(uint64) bool, bytes bool, lead ...string) []metrics.Sample {
	ids := make([]uint64, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []metrics.Sample
	for _, id := range ids {
		if !member(id) {
			continue
		}
		c, node := counts[id], strconv.FormatUint(id, 10)
		in, outv := c.PacketsIn, c.PacketsOut
		if bytes {
			in, outv = c.BytesIn, c.BytesOut
		}
		label := func(dir string) []string { return append(slices.Clone(lead), node, dir) }
		out = append(out,
			metrics.Sample{Labels: label("in"), Value: float64(in)},
			metrics.Sample{Labels: label("out"), Value: float64(outv)})
	}
	return out
}

// registerPeerRelayUsage exports what each peer relay reported, per relay
// (label relay: the relay node's ID) and member node, as
// registerRelayUsage does for the embedded relay.
func (m *serverMetrics) registerPeerRelayUsage(p *peerRelays, member func(uint64) bool) {
	collect := func(bytes bool) func() []metrics.Sample {
		return func() []metrics.Sample {
			ledgers, _ := p.ledgers()
			rids := make([]uint64, 0, len(ledgers))
			for id := range ledgers {
				rids = append(rids, id)
			}
			slices.Sort(rids)
			var out []metrics.Sample
			for _, rid := range rids {
				counts, _, err := ledgers[rid].Usage(0, time.Now())
				if err != nil {
					continue
				}
				out = append(out, usageSamples(counts, member, bytes, strconv.FormatUint(rid, 10))...)
			}
			return out
		}
	}
	labels := []string{"relay", "node", "direction"}
	m.reg.CounterFunc("meshvpn_coordinator_peer_relay_bytes_total",
		"Bytes a peer relay reported it passed for a member node, by direction as for meshvpn_coordinator_relay_bytes_total (reported every 30 s).", labels, collect(true))
	m.reg.CounterFunc("meshvpn_coordinator_peer_relay_packets_total",
		"Packets a peer relay reported it passed for a member node, by direction as for meshvpn_coordinator_relay_bytes_total.", labels, collect(false))
}

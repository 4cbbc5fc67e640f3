package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	NodeID uint64 `json:"node_id"`
	Node   string `json:"node"` // name; empty for a node no longer in the mesh
	Relay  string `json:"relay"`
	// Replica is the replica whose embedded relay the row counts, with
	// replicas on a PostgreSQL store (each runs its own); empty otherwise.
	Replica    string  `json:"replica,omitempty"`
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
//
// The relays are this coordinator's (its embedded relay, and the peer
// relays' reports it received), counted in its memory up to now, and
// those of every other coordinator process on the store, from what they
// wrote to it (usage_store.go: at most usageFlushEvery late, and only
// within the history kept, relay.UsageHistory): other replicas, and this
// coordinator's earlier runs. Each replica's embedded relay is a relay of
// its own; a peer relay's reports count together whichever replica they
// went to.
func (s *Server) RelayUsage(ctx context.Context, since time.Duration, now time.Time) (UsageReport, error) {
	if since < 0 || since > relay.UsageHistory {
		return UsageReport{}, fmt.Errorf("usage: --since %s: want at most %s (the history kept; omit --since for the totals since the coordinator started)", since, relay.UsageHistory)
	}
	rep := UsageReport{From: s.started, To: now, Rows: []UsageRow{}}
	cutoff := s.started
	if since > 0 {
		cutoff = now.Add(-since)
		rep.From = cutoff
	}
	// embedded is the counts of each replica's embedded relay, by node.
	embedded := map[string]map[uint64]relay.Counts{}
	if s.usage != nil {
		counts, from, err := s.usage.Usage(since, now)
		if err != nil {
			return UsageReport{}, err
		}
		rep.From = from
		embedded[s.store.replica] = counts
	}
	stored, err := s.store.readUsage(ctx, s.usageOut.writer, cutoff)
	if err != nil {
		return UsageReport{}, err
	}
	peers := storedPeerUsage{counts: map[uint64]map[uint64]relay.Counts{}, reported: map[uint64]time.Time{}}
	for k, sum := range stored {
		if sum.from.Before(rep.From) {
			rep.From = sum.from
		}
		if k.relay != 0 {
			// A peer relay that left the mesh is forgotten, as its own
			// ledger is (peerRelays.forget).
			if !s.hub.Active(k.relay) {
				continue
			}
			if sum.reportedAt.After(peers.reported[k.relay]) {
				peers.reported[k.relay] = sum.reportedAt
			}
			addCounts(peers.counts, k.relay, k.node, sum.counts)
			continue
		}
		addCounts(embedded, k.replica, k.node, sum.counts)
	}
	replicas := slices.Sorted(maps.Keys(embedded))
	names := map[uint64]string{}
	for _, n := range s.hub.Nodes() {
		names[n.ID] = n.Name
	}
	ids := make([]uint64, 0, len(names))
	for id := range names {
		ids = append(ids, id)
	}
	left := map[uint64]bool{}
	for _, counts := range embedded {
		for id := range counts {
			if _, ok := names[id]; !ok && !left[id] {
				left[id] = true
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, r := range replicas {
			c := embedded[r][id]
			rep.Rows = append(rep.Rows, UsageRow{NodeID: id, Node: names[id], Relay: EmbeddedRelay, Replica: r, Reported: true,
				BytesIn: &c.BytesIn, PacketsIn: &c.PacketsIn, BytesOut: &c.BytesOut, PacketsOut: &c.PacketsOut})
		}
		for _, u := range s.cfg.TURN.URLs {
			rep.Rows = append(rep.Rows, UsageRow{NodeID: id, Node: names[id], Relay: u})
		}
	}
	peerRows, err := s.peerUsageRows(ids, names, since, now, peers)
	if err != nil {
		return UsageReport{}, err
	}
	rep.Rows = append(rep.Rows, peerRows...)
	return rep, nil
}

// addCounts adds c to m[k][node].
func addCounts[K comparable](m map[K]map[uint64]relay.Counts, k K, node uint64, c relay.Counts) {
	byNode := m[k]
	if byNode == nil {
		byNode = map[uint64]relay.Counts{}
		m[k] = byNode
	}
	sum := byNode[node]
	sum.Add(c)
	byNode[node] = sum
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
			if d > relay.UsageHistory {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("since: want at most %s (the history kept)", relay.UsageHistory))
				return
			}
			since = d
		}
		rep, err := s.RelayUsage(r.Context(), since, time.Now())
		if err != nil {
			// The window was checked: what fails is reading the store.
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}

var errUsageOffline = errors.New("relay usage is asked from the running coordinator (it counts its relays live), and no coordinator is running on this state directory")

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

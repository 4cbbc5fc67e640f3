package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

// maxRelayOfferBody bounds a RelayOffer: MaxRelayUsageRows rows of about
// 100 bytes.
const maxRelayOfferBody = control.MaxRelayUsageRows * 128

// handleRelayOffer serves POST control.PathRelayOffer: a member offers its
// peer relay and reports its usage; the answer carries the relay's secret.
func (s *Server) handleRelayOffer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	node, ok := s.authBearer(w, r)
	if !ok {
		return
	}
	var req control.RelayOffer
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRelayOfferBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "relay offer: bad JSON")
		return
	}
	if len(req.Usage) > control.MaxRelayUsageRows {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("relay offer: %d usage rows, at most %d", len(req.Usage), control.MaxRelayUsageRows))
		return
	}
	now := time.Now()
	resp := control.RelayOfferResponse{Secret: string(relay.PeerSecret(s.turnSecret, node.ID)), Every: int(peerRelayEvery / time.Second)}
	addr, err := s.checkRelayOffer(req.Addr, remoteIP(r.RemoteAddr))
	if err != nil {
		resp.Reason = err.Error()
		s.peers.withdraw(node.ID)
		s.logLimit.LogFor(fmt.Sprint(node.ID), s.log, slog.LevelWarn, "peer relay not listed", "node", node.ID, "reason", resp.Reason)
		addr = netip.AddrPort{}
	} else {
		resp.Listed = true
		s.peers.offer(node.ID, addr, now)
	}
	if s.replicas != nil {
		// The agents of the other replicas use it too.
		s.replicas.announceOffer(node.ID, addr)
	}
	s.peers.report(node.ID, req.Usage, s.hub.Active, now)
	writeJSON(w, http.StatusOK, resp)
}

// checkRelayOffer accepts a relay address only where the offering node's
// request comes from (so no member can point the mesh's relay probes at a
// third party), on an address a relay may reach (not a private one, unless
// --turn-allow-peers allows it: no member can make relays reach a LAN).
func (s *Server) checkRelayOffer(addr, from string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return netip.AddrPort{}, errors.New("relay address: want IPv4:port")
	}
	if from != "" && ap.Addr().String() != from {
		return netip.AddrPort{}, fmt.Errorf("relay address %s is not the address the offer comes from (%s)", ap.Addr(), from)
	}
	if !relay.Reachable(ap.Addr(), s.cfg.TURN.AllowPeers) {
		return netip.AddrPort{}, fmt.Errorf("relay address %s is private or reserved", ap.Addr())
	}
	return ap, nil
}

// authBearer authenticates a member's request by its bearer credential, as
// the stream does, and answers the refusal itself.
func (s *Server) authBearer(w http.ResponseWriter, r *http.Request) (control.Node, bool) {
	att, ok := s.beginAuth(w, r)
	if !ok {
		return control.Node{}, false
	}
	cred, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		att.failed()
		writeError(w, http.StatusUnauthorized, "missing bearer credential")
		return control.Node{}, false
	}
	node, err := s.store.AuthenticateNode(r.Context(), cred)
	if err == nil && !s.hub.Active(node.ID) {
		err = ErrNodeRemoved
	}
	if isCredentialRefusal(err) {
		att.failed()
		writeError(w, http.StatusUnauthorized, err.Error())
		return control.Node{}, false
	}
	if err != nil {
		s.log.Error("authenticate", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return control.Node{}, false
	}
	att.ok()
	return node, true
}

// peerRelayList mints node's credentials for every peer relay but its
// own, of the relay nodes the access policy lets it know: a peer relay
// serves only the nodes in its own netmap.
func (s *Server) peerRelayList(node uint64, now time.Time, exp time.Time) []control.Relay {
	offers, _ := s.peers.list(now)
	out := make([]control.Relay, 0, 2*len(offers))
	for _, o := range offers {
		if o.node == node || !s.hub.PolicyPeers(node, o.node) {
			continue
		}
		user, pass := relay.MintCredential(relay.PeerSecret(s.turnSecret, o.node), node, exp)
		hp := o.addr.String()
		out = append(out,
			control.Relay{URL: "turn:" + hp + "?transport=udp", Username: user, Password: pass, Expires: exp, Node: o.node},
			control.Relay{URL: "turn:" + hp + "?transport=tcp", Username: user, Password: pass, Expires: exp, Node: o.node})
	}
	return out
}

// storedPeerUsage is what other coordinators stored of the peer relays'
// reports (usage_store.go): counts by relay node and node, and each
// relay's latest report among those.
type storedPeerUsage struct {
	counts   map[uint64]map[uint64]relay.Counts
	reported map[uint64]time.Time
}

// peerUsageRows are the usage rows of the peer relays for the nodes ids:
// one per node and relay that is listed or reported in the window, here
// or (stored) to another coordinator.
func (s *Server) peerUsageRows(ids []uint64, names map[uint64]string, since time.Duration, now time.Time, stored storedPeerUsage) ([]UsageRow, error) {
	ledgers, reported := s.peers.ledgers()
	offers, _ := s.peers.list(now)
	relays := make([]uint64, 0, len(ledgers)+len(offers)+len(stored.counts))
	for id := range ledgers {
		relays = append(relays, id)
	}
	for _, o := range offers {
		relays = append(relays, o.node)
	}
	for id := range stored.counts {
		relays = append(relays, id)
	}
	slices.Sort(relays)
	relays = slices.Compact(relays)
	var rows []UsageRow
	for _, rid := range relays {
		counts := map[uint64]relay.Counts{}
		if l := ledgers[rid]; l != nil {
			c, _, err := l.Usage(since, now)
			if err != nil {
				return nil, err
			}
			counts = c
		}
		for id, c := range stored.counts[rid] {
			sum := counts[id]
			sum.Add(c)
			counts[id] = sum
		}
		at, ok := reported[rid]
		if t := stored.reported[rid]; t.After(at) {
			at, ok = t, true
		}
		name := PeerRelayPrefix + names[rid]
		if names[rid] == "" {
			name = fmt.Sprintf("%s%d", PeerRelayPrefix, rid)
		}
		for _, id := range ids {
			if id == rid {
				continue
			}
			c := counts[id]
			row := UsageRow{NodeID: id, Node: names[id], Relay: name, Reported: true,
				BytesIn: &c.BytesIn, PacketsIn: &c.PacketsIn, BytesOut: &c.BytesOut, PacketsOut: &c.PacketsOut}
			if ok {
				row.ReportedAt = &at
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// PeerRelayPrefix starts the name of a peer relay in usage reports: "peer:"
// and the name of the node running it.
const PeerRelayPrefix = "peer:"

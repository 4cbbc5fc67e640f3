package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/relay"
)

// offerRelay posts a relay offer as node (credential cred) from remote.
func offerRelay(t *testing.T, s *Server, cred, remote string, offer control.RelayOffer) (int, control.RelayOfferResponse) {
	t.Helper()
	body, _ := json.Marshal(offer)
	req := httptest.NewRequest(http.MethodPost, control.PathRelayOffer, bytes.NewReader(body))
	req.RemoteAddr = remote
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	var resp control.RelayOfferResponse
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
	}
	return w.Code, resp
}

// relaysFor is the relay list the stream would send node now.
func relaysFor(t *testing.T, s *Server, node uint64) []control.Relay {
	t.Helper()
	frame := s.relayUpdate(node, "coord.example.com", &relayDue{}, time.Now())
	if frame == nil {
		return nil
	}
	var m control.Message
	if err := json.Unmarshal(frame, &m); err != nil || m.Delta == nil || m.Delta.Relays == nil {
		t.Fatalf("relay frame %s", frame)
	}
	return *m.Delta.Relays
}

// TestPeerRelayListedWithOwnSecret: a member's relay offer is listed to
// the other nodes (not to itself) with credentials that only its own
// secret verifies: not the coordinator's TURN secret, not another relay's.
func TestPeerRelayListedWithOwnSecret(t *testing.T) {
	s := newTestServer(t)
	var ids [3]uint64
	var creds [3]string
	for i, name := range []string{"relay", "b", "c"} {
		r := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)})
		ids[i], creds[i] = r.NodeID, r.Credential
	}
	if l := relaysFor(t, s, ids[1]); len(l) != 0 {
		t.Fatalf("relays before any offer: %+v", l)
	}
	code, resp := offerRelay(t, s, creds[0], "192.0.2.1:40000", control.RelayOffer{Addr: "192.0.2.1:3478"})
	if code != http.StatusOK || !resp.Listed || resp.Secret == "" {
		t.Fatalf("offer: %d %+v", code, resp)
	}
	list := relaysFor(t, s, ids[1])
	if len(list) != 2 || list[0].URL != "turn:192.0.2.1:3478?transport=udp" || list[1].URL != "turn:192.0.2.1:3478?transport=tcp" || list[0].Node != ids[0] {
		t.Fatalf("b's relays: %+v", list)
	}
	r := list[0]
	if node, err := relay.ParseUsername(r.Username, time.Now()); err != nil || node != ids[1] {
		t.Errorf("credential %q not minted for b: %v", r.Username, err)
	}
	if relay.Password([]byte(resp.Secret), r.Username) != r.Password {
		t.Error("the relay's own secret does not verify b's credential")
	}
	if relay.Password(s.turnSecret, r.Username) == r.Password {
		t.Error("the coordinator's TURN secret verifies a peer relay credential")
	}
	if strings.Contains(resp.Secret, string(s.turnSecret)) {
		t.Error("the relay got the coordinator's TURN secret")
	}
	// c's relay secret does not verify b's credential for the first relay.
	_, respC := offerRelay(t, s, creds[2], "192.0.2.3:40000", control.RelayOffer{Addr: "192.0.2.3:3478"})
	if respC.Secret == resp.Secret || relay.Password([]byte(respC.Secret), r.Username) == r.Password {
		t.Error("another relay's secret verifies a credential for this relay")
	}
	for _, rl := range relaysFor(t, s, ids[0]) {
		if rl.Node == ids[0] {
			t.Errorf("the relay node is offered its own relay: %+v", rl)
		}
	}
	// Removing the relay node withdraws its relay.
	if _, err := s.RemoveNode(t.Context(), "relay"); err != nil {
		t.Fatal(err)
	}
	for _, rl := range relaysFor(t, s, ids[1]) {
		if rl.Node == ids[0] {
			t.Errorf("a removed node's relay still listed: %+v", rl)
		}
	}
}

// TestPeerRelayOfferRefusals: a member cannot point the mesh at an address
// that is not its own (the mesh's relay probes would go to a third party)
// nor at a private one (the relays would relay into a LAN); a stranger
// cannot offer at all.
func TestPeerRelayOfferRefusals(t *testing.T) {
	s := newTestServer(t)
	r := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "m", PublicKey: newPublicKey(t)})
	for _, c := range []struct{ remote, addr, want string }{
		{"192.0.2.1:1000", "198.51.100.7:3478", "not the address the offer comes from"},
		{"10.1.2.3:1000", "10.1.2.3:3478", "private or reserved"},
		{"127.0.0.1:1000", "127.0.0.1:3478", "private or reserved"},
		{"192.0.2.1:1000", "192.0.2.1:0", "want IPv4:port"},
		{"192.0.2.1:1000", "x", "want IPv4:port"},
	} {
		code, resp := offerRelay(t, s, r.Credential, c.remote, control.RelayOffer{Addr: c.addr})
		if code != http.StatusOK || resp.Listed || !strings.Contains(resp.Reason, c.want) {
			t.Errorf("offer %s from %s: %d %+v, want unlisted: %s", c.addr, c.remote, code, resp, c.want)
		}
	}
	if l := relaysFor(t, s, r.NodeID+1); len(l) != 0 {
		t.Errorf("refused offers listed: %+v", l)
	}
	if code, _ := offerRelay(t, s, "", "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478"}); code != http.StatusUnauthorized {
		t.Errorf("offer without credential: %d, want 401", code)
	}
	if code, _ := offerRelay(t, s, "bogus", "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478"}); code != http.StatusUnauthorized {
		t.Errorf("offer with a bad credential: %d, want 401", code)
	}
}

// TestPeerRelayUsage: what a peer relay reports shows in usage per relay
// (rows of nodes that are not members are dropped).
func TestPeerRelayUsage(t *testing.T) {
	s := newTestServer(t)
	rel := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "rel", PublicKey: newPublicKey(t)})
	b := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: "b", PublicKey: newPublicKey(t)})
	for range 2 {
		code, _ := offerRelay(t, s, rel.Credential, "192.0.2.1:1000", control.RelayOffer{Addr: "192.0.2.1:3478", Usage: []control.RelayUsage{
			{Node: b.NodeID, BytesIn: 1000, PacketsIn: 10, BytesOut: 500, PacketsOut: 5},
			{Node: 999999, BytesIn: 1 << 40},
		}})
		if code != http.StatusOK {
			t.Fatal(code)
		}
	}
	rep, err := s.RelayUsage(t.Context(), 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, row := range rep.Rows {
		if row.NodeID == 999999 {
			t.Errorf("a non-member's row: %+v", row)
		}
		if row.Relay == PeerRelayPrefix+"rel" && row.NodeID == b.NodeID {
			found = true
			if *row.BytesIn != 2000 || *row.PacketsIn != 20 || *row.BytesOut != 1000 || *row.PacketsOut != 10 || !row.Reported {
				t.Errorf("b's row on the peer relay: %+v", row)
			}
		}
	}
	if !found {
		t.Fatalf("no row for b on peer:rel in %+v", rep.Rows)
	}
	var buf strings.Builder
	s.metrics.reg.WriteTo(&buf)
	want := fmt.Sprintf(`meshvpn_coordinator_peer_relay_bytes_total{relay="%d",node="%d",direction="in"} 2000`, rel.NodeID, b.NodeID)
	if !strings.Contains(buf.String(), want) || strings.Contains(buf.String(), `node="999999"`) {
		t.Errorf("metrics lack %s (or hold the non-member):\n%s", want, buf.String())
	}
}

// TestPeerRelayUnderPolicy: a peer relay is listed only to the nodes the
// access policy lets it know (its own netmap: it refuses the others), and
// a new policy sends every node a fresh list.
func TestPeerRelayUnderPolicy(t *testing.T) {
	s := newTestServer(t)
	var ids [3]uint64
	var creds [3]string
	for i, name := range []string{"relay", "b", "c"} {
		r := mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: newKey(t, s.Store(), false, time.Hour), Hostname: name, PublicKey: newPublicKey(t)})
		ids[i], creds[i] = r.NodeID, r.Credential
	}
	if code, resp := offerRelay(t, s, creds[0], "192.0.2.1:40000", control.RelayOffer{Addr: "192.0.2.1:3478"}); code != http.StatusOK || !resp.Listed {
		t.Fatalf("offer: %d %+v", code, resp)
	}
	_, gen := s.peers.list(time.Now())
	if err := s.SetPolicy(t.Context(), []byte(`{"acls": [{"action": "accept", "src": ["b"], "dst": ["relay:*"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if _, g := s.peers.list(time.Now()); g == gen {
		t.Error("a new policy did not renew the relay lists")
	}
	if l := relaysFor(t, s, ids[1]); len(l) != 2 {
		t.Errorf("b, allowed to reach the relay node: relays %+v", l)
	}
	if l := relaysFor(t, s, ids[2]); len(l) != 0 {
		t.Errorf("c, which may not know the relay node: relays %+v", l)
	}
}

package coordinator

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// lastVersion returns the netmap version of the last frame that had one.
func lastVersion(t *testing.T, frames []control.Message) string {
	t.Helper()
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i].NetmapVersion != "" {
			return frames[i].NetmapVersion
		}
	}
	t.Fatal("no frame carried a netmap version")
	return ""
}

// reconnect attaches a new stream of id that says it holds since and
// returns its first frame.
func reconnect(t *testing.T, s *Server, id uint64, since string) (*hubtest.Conn, control.Message) {
	t.Helper()
	return reconnectFrom(t, s, id, since, "")
}

// reconnectFrom is reconnect for a stream from address from.
func reconnectFrom(t *testing.T, s *Server, id uint64, since, from string) (*hubtest.Conn, control.Message) {
	t.Helper()
	c := hubtest.NewConnFrom(id, from, 4096)
	if err := s.hub.Attach(t.Context(), c.Stream, 2, since, control.Netmap{STUN: []string{"203.0.113.10:3478"}}); err != nil {
		t.Fatal(err)
	}
	got := c.Drain(t)
	if len(got) == 0 {
		t.Fatal("no first frame")
	}
	return c, got[0]
}

func upsertIDs(d *control.Delta) []uint64 {
	var ids []uint64
	if d != nil {
		for _, n := range d.Upsert {
			ids = append(ids, n.ID)
		}
	}
	return ids
}

// TestResumeSendsOnlyChanges: an agent that reconnects naming the version
// it holds gets only the nodes changed since (as a resume, with the server
// fields), and a version the hub cannot bring up to date gets the full
// netmap.
func TestResumeSendsOnlyChanges(t *testing.T) {
	s, key := batchServer(t)
	for i := range 20 {
		addNode(t, s, key, "old"+strings.Repeat("x", i%3)+string(rune('a'+i)))
	}
	obsID := addNode(t, s, key, "observer")
	obs := hubtest.NewConn(obsID)
	attachConn(t, s, obs, 2)
	s.hub.Flush()
	held := lastVersion(t, obs.Drain(t))

	s.hub.Detach(obs.Stream)
	var added []uint64
	for i := range 3 {
		added = append(added, addNode(t, s, key, "new"+string(rune('a'+i))))
	}
	s.hub.Flush()

	_, m := reconnect(t, s, obsID, held)
	if m.Type != control.MsgResume {
		t.Fatalf("reconnect holding %s: first frame %q, want %q", held, m.Type, control.MsgResume)
	}
	if got := upsertIDs(m.Delta); !slices.Equal(got, added) {
		t.Fatalf("resume upserts %v, want the nodes added since: %v", got, added)
	}
	if m.Netmap == nil || m.Netmap.Self.ID != obsID || len(m.Netmap.Peers) != 0 || !slices.Equal(m.Netmap.STUN, []string{"203.0.113.10:3478"}) {
		t.Fatalf("resume netmap part: %+v", m.Netmap)
	}
	now := s.hub.NetmapVersion()
	if m.NetmapVersion != now {
		t.Fatalf("resume brings the agent to %q, want %q", m.NetmapVersion, now)
	}

	// An agent that is current gets a resume with nothing in it.
	s.hub.Flush()
	now = s.hub.NetmapVersion()
	if _, m := reconnect(t, s, obsID, now); m.Type != control.MsgResume || len(upsertIDs(m.Delta)) != 0 || len(m.Delta.Remove) != 0 {
		t.Fatalf("current agent: %s with %d upserts, want an empty resume", m.Type, len(upsertIDs(m.Delta)))
	}

	for _, since := range []string{"", "0000000000000000.1", "garbage", now + "1", strings.Split(now, ".")[0] + ".-1"} {
		if _, m := reconnect(t, s, obsID, since); m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 23 {
			t.Fatalf("since %q: %s, want the full netmap", since, m.Type)
		}
	}

	// Past the ring (8,192 node IDs in all): the batches after held are
	// forgotten.
	ids := s.hub.Nodes()
	for i := range 8192/len(ids) + 2 {
		for _, n := range ids {
			n.Name = "r" + strconv.Itoa(i) + "-" + strconv.FormatUint(n.ID, 10)
			s.hub.Upsert(n)
		}
		s.hub.Flush()
	}
	if _, m := reconnect(t, s, obsID, held); m.Type != control.MsgNetmap {
		t.Fatalf("version older than the ring: %s, want the full netmap", m.Type)
	}
}

// TestResumeAfterRestart: a coordinator started again on the same store
// resumes an agent holding the last version it sent, sends nothing more to
// the others when that agent comes back online, and starts a new epoch
// when the store's membership is not what the agents were sent.
func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server { return restartable(t, dir) }
	s := start()
	key := newKey(t, s.store, true, 0)
	for i := range 10 {
		addNode(t, s, key, "n"+string(rune('a'+i)))
	}
	obsID := addNode(t, s, key, "observer")
	peerID := addNode(t, s, key, "peer")
	obs := hubtest.NewConn(obsID)
	attachConn(t, s, obs, 2)
	peer := hubtest.NewConnFrom(peerID, "192.0.2.7", 4096)
	attachConn(t, s, peer, 2)
	s.hub.Flush()
	held := lastVersion(t, obs.Drain(t))
	s.Close() // a crash: no clean shutdown

	s = start()
	obs, m := reconnect(t, s, obsID, held)
	if m.Type != control.MsgResume || len(upsertIDs(m.Delta)) != 0 {
		t.Fatalf("after a restart, holding %s: %s with %d upserts, want an empty resume", held, m.Type, len(upsertIDs(m.Delta)))
	}
	// The peer comes back from where it was: it was online before, so the
	// observer is told nothing.
	reconnectFrom(t, s, peerID, held, "192.0.2.7")
	pending := s.hub.Counts().Pending
	s.hub.Flush()
	if got := obs.Drain(t); pending != 0 || len(got) != 0 {
		t.Fatalf("%d changes pending and %d frames to the observer after a node that was online came back from the same address", pending, len(got))
	}

	// A registration reaches the store but not the agents, then a crash:
	// the restarted coordinator cannot vouch for the old version.
	// It is written to the store directly, as if the crash came before the
	// hub's batch: Close would flush that batch (store and ring), and the
	// restarted coordinator could then resume from it.
	suiteRegister(t, s.store, key, "late")
	s.Close()
	s = start()
	defer s.Close()
	if _, m := reconnect(t, s, obsID, held); m.Type != control.MsgNetmap {
		t.Fatalf("store changed behind the agents' backs: %s, want the full netmap", m.Type)
	}
}

// TestNoResumeAcrossPolicy: an agent that held a version from before a
// policy was set is not resumed (a resume carries mesh-wide changes and no
// filter); it gets its trimmed netmap with its filter. Clearing the policy
// starts a new epoch, so a version from under the policy is not resumed
// either.
func TestNoResumeAcrossPolicy(t *testing.T) {
	s, key := batchServer(t)
	for _, n := range []string{"laptop", "server", "printer"} {
		addNode(t, s, key, n)
	}
	obsID := addNode(t, s, key, "observer")
	obs := hubtest.NewConn(obsID)
	attachConn(t, s, obs, 2)
	s.hub.Flush()
	held := lastVersion(t, obs.Drain(t))
	s.hub.Detach(obs.Stream)

	src := []byte(`{"acls": [{"action": "accept", "src": ["observer"], "dst": ["server:22"]}]}`)
	if err := s.SetPolicy(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	_, m := reconnect(t, s, obsID, held)
	if m.Type != control.MsgNetmap || m.Netmap.Filter == nil || len(m.Netmap.Peers) != 1 {
		t.Fatalf("reconnect under a new policy holding %s: %s (filter %v, %d peers), want a trimmed netmap with a filter",
			held, m.Type, m.Netmap != nil && m.Netmap.Filter != nil, len(m.Netmap.Peers))
	}

	under := s.hub.NetmapVersion()
	if err := s.ClearPolicy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, m := reconnect(t, s, obsID, under); m.Type != control.MsgNetmap || len(m.Netmap.Peers) != 3 {
		t.Fatalf("reconnect after the policy was cleared holding %s: %s, want the full netmap", under, m.Type)
	}
}

// TestResumeAfterMemberFlaps: one member going offline and online in a
// loop makes a batch each time (up to 20 a second). With the ring bounded
// at 256 batches, 13 s of that made every agent that had been away longer
// get a full netmap on its return (2 MB at 10,000 nodes) instead of a
// resume naming the one member that flapped.
func TestResumeAfterMemberFlaps(t *testing.T) {
	s, key := batchServer(t)
	for i := range 10 {
		addNode(t, s, key, "n"+strconv.Itoa(i))
	}
	obsID := addNode(t, s, key, "observer")
	flapID := addNode(t, s, key, "flapper")
	obs := hubtest.NewConn(obsID)
	attachConn(t, s, obs, 2)
	s.hub.Flush()
	held := lastVersion(t, obs.Drain(t))
	s.hub.Detach(obs.Stream)
	s.hub.Flush()

	const flaps = 1000 // 50 s of flapping at the 50 ms batch window
	for range flaps {
		c := hubtest.NewConn(flapID)
		attachConn(t, s, c, 2)
		s.hub.Flush()
		s.hub.Detach(c.Stream)
		s.hub.Flush()
	}
	_, m := reconnect(t, s, obsID, held)
	if m.Type != control.MsgResume {
		t.Fatalf("away during %d flaps (%d batches) of one member: first frame %q, want %q", flaps, 2*flaps, m.Type, control.MsgResume)
	}
	if got := upsertIDs(m.Delta); !slices.Equal(got, []uint64{flapID}) {
		t.Fatalf("resume upserts %v, want only the member that flapped (%d)", got, flapID)
	}
}

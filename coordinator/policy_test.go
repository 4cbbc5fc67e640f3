package coordinator

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
	"github.com/meshvpn/meshvpn/policy"
)

// policyView is an agent's picture under a policy: its peers' names and
// its filter.
type policyView struct {
	hubtest.View
	filter *policy.Filter
}

func (v *policyView) take(t *testing.T, f *hubtest.Conn) {
	t.Helper()
	for _, m := range f.Drain(t) {
		v.Apply(t, m)
		switch {
		case m.Type == control.MsgNetmap:
			v.filter = m.Netmap.Filter
		case m.Delta.Filter != nil:
			v.filter = m.Delta.Filter
		}
	}
}

func (v *policyView) names() []string {
	var out []string
	for _, n := range v.Peers {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

func TestPolicyTrimsNetmapsAndFlips(t *testing.T) {
	s, key := batchServer(t)
	ctx := context.Background()
	tagged, err := s.store.CreateAuthKeyWith(ctx, AuthKeyOptions{Reusable: true, Tags: []string{"tag:server"}})
	if err != nil {
		t.Fatal(err)
	}
	laptop := addNode(t, s, key, "laptop")
	server := addNode(t, s, tagged.Key, "server")
	lonely := addNode(t, s, key, "lonely")

	// One-way rule: laptop → server:22 ("--tag tag:server" and "tag:server"
	// name the same tag).
	if err := s.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["laptop"], "dst": ["tag:server:22"]}],
		"tests": [{"src": "laptop", "accept": ["server:22"], "deny": ["server:80"]}]}`)); err != nil {
		t.Fatal(err)
	}
	conns := map[uint64]*hubtest.Conn{}
	views := map[uint64]*policyView{}
	for _, id := range []uint64{laptop, server, lonely} {
		conns[id] = hubtest.NewConn(id)
		views[id] = &policyView{}
		attachConn(t, s, conns[id], 2)
	}
	sync := func() {
		s.hub.Flush()
		for id, c := range conns {
			views[id].take(t, c)
		}
	}
	sync()
	want := func(id uint64, names ...string) {
		t.Helper()
		if got := views[id].names(); !slices.Equal(got, names) {
			t.Fatalf("node %d sees %v, want %v", id, got, names)
		}
	}
	want(laptop, "server")
	want(server, "laptop")
	want(lonely)
	if f := views[server].filter; f == nil || len(f.In) != 1 || f.In[0].Peers[0] != "laptop" || len(f.Out) != 0 {
		t.Fatalf("server filter %+v", f)
	}
	// Signals between nodes that may not talk are dropped.
	if s.hub.PolicyPeers(lonely, laptop) {
		t.Fatal("lonely may signal laptop")
	}

	// A bad file is refused with its position; the old policy stays.
	err = s.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "bogus": 1}]}`))
	if err == nil || !strings.Contains(err.Error(), "line 1, column 62") {
		t.Fatalf("bad policy: %v", err)
	}
	err = s.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "tests": [{"src": "laptop", "deny": ["server:22"]}]}`))
	if err == nil || !strings.Contains(err.Error(), "should deny") {
		t.Fatalf("failing test: %v", err)
	}
	if src, _ := s.PolicySource(ctx); !strings.Contains(string(src), "tag:server:22") {
		t.Fatalf("old policy lost: %s", src)
	}

	// Everyone may reach lonely: it gains both peers in one delta.
	if err := s.SetPolicy(ctx, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["lonely:*"]}]}`)); err != nil {
		t.Fatal(err)
	}
	sync()
	want(laptop, "lonely")
	want(server, "lonely")
	want(lonely, "laptop", "server")

	// A node joining is sent only to the nodes it may talk to: the
	// laptop and the server get no frame at all.
	extra := addNode(t, s, key, "extra")
	s.hub.Flush()
	for _, id := range []uint64{laptop, server} {
		if got := conns[id].Drain(t); len(got) != 0 {
			t.Fatalf("node %d got %d frames for a join it may not see: %+v", id, len(got), got[0].Delta)
		}
	}
	sync()
	want(laptop, "lonely")
	want(lonely, "extra", "laptop", "server")

	// A rename changes what the renamed node sees.
	if _, err := s.RenameNode(ctx, "extra", "lonely2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RenameNode(ctx, "lonely", "other"); err != nil {
		t.Fatal(err)
	}
	sync()
	want(lonely)
	want(laptop)
	_ = extra

	// Lifting the policy brings everyone back.
	s.hub.SetPolicy(nil, nil)
	sync()
	want(laptop, "lonely2", "other", "server")
	if f := views[laptop].filter; f == nil || !f.AllowAll {
		t.Fatalf("filter after lifting: %+v", f)
	}
}

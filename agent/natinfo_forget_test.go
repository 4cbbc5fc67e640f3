package agent

import "testing"

// TestNATInfoForgetsRemovedPeer: a peer marked to be asked for its NAT
// views while our probe still runs, then removed from the netmap, leaves
// no mark behind (removePeer calls forgetNATInfo); before, the ask set
// kept it for good.
func TestNATInfoForgetsRemovedPeer(t *testing.T) {
	a := &Agent{}
	p := &peer{a: a, id: 42}
	a.askNATInfo(p) // probe not done: only the ask mark is set
	a.queueNATInfo(p)
	a.forgetNATInfo(p.id)
	if _, ok := a.natInfo.ask[p.id]; ok {
		t.Fatal("removed peer still marked to be asked for its NAT views")
	}
	if _, ok := a.natInfo.pending[p.id]; ok {
		t.Fatal("removed peer still queued for our NAT views")
	}
}

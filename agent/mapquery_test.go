package agent

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// TestMapQueriesAnswer: an answer to one of our own mapping queries is
// taken off the shared socket (and read), anything else goes on to ICE.
func TestMapQueriesAnswer(t *testing.T) {
	var q mapQueries
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	ch := make(chan netip.AddrPort, 1)
	q.pending = map[[stun.TransactionIDSize]byte]chan netip.AddrPort{req.TransactionID: ch}

	other := stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(198, 18, 3, 2), Port: 4000})
	if q.answer(other.Raw) {
		t.Error("an answer to someone else's request was taken")
	}
	ours := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(198, 18, 3, 2), Port: 4242})
	if !q.answer(ours.Raw) {
		t.Fatal("the answer to our query went on to ICE")
	}
	if got := <-ch; got != netip.MustParseAddrPort("198.18.3.2:4242") {
		t.Errorf("mapped %v, want 198.18.3.2:4242", got)
	}
	if q.answer(ours.Raw) {
		t.Error("a second copy of the answer was taken")
	}
	if q.answer([]byte{0, 1, 2}) {
		t.Error("garbage was taken")
	}
}

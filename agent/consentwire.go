package agent

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// consentChecks are the direct lanes' consent checks in flight from the
// shared socket, by transaction ID. The bind's divert hands their answers
// here before ICE sees them (pion would discard them as unknown
// transactions); anything else goes on to ICE.
type consentChecks struct {
	n       atomic.Int32 // len(pending), read on every STUN packet without the lock
	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]consentWait
}

// consentWait is one check: where it went, the password its answer must
// carry MESSAGE-INTEGRITY under (the peer's), and whom to tell.
type consentWait struct {
	to   netip.AddrPort
	pwd  []byte
	sent time.Time
	done chan<- struct{}
}

// consentWaitMax: an answer later than this is not taken (the check was
// repeated by then anyway).
const consentWaitMax = consentLostAfter + consentFast

func (q *consentChecks) add(id [stun.TransactionIDSize]byte, w consentWait) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending == nil {
		q.pending = map[[stun.TransactionIDSize]byte]consentWait{}
	}
	for k, o := range q.pending {
		if w.sent.Sub(o.sent) > consentWaitMax {
			delete(q.pending, k)
		}
	}
	q.pending[id] = w
	q.n.Store(int32(len(q.pending)))
}

// forget drops checks whose answers nobody waits for any more.
func (q *consentChecks) forget(ids [][stun.TransactionIDSize]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		delete(q.pending, id)
	}
	q.n.Store(int32(len(q.pending)))
}

// answer takes p, a STUN message from from, if it answers one of our
// checks, and tells the check's owner when it is genuine: a Binding
// success response, from the address checked, with MESSAGE-INTEGRITY
// under the peer's password. An answer with our transaction ID that fails
// this is dropped and the check still waits: whoever forged it learns
// nothing and keeps nothing alive.
func (q *consentChecks) answer(p []byte, from netip.AddrPort) bool {
	if q.n.Load() == 0 {
		return false
	}
	var m stun.Message
	m.Raw = append(m.Raw[:0], p...)
	if m.Decode() != nil {
		return false
	}
	q.mu.Lock()
	w, ok := q.pending[m.TransactionID]
	q.mu.Unlock()
	if !ok {
		return false
	}
	if m.Type != stun.BindingSuccess || from.Addr().Unmap() != w.to.Addr().Unmap() || from.Port() != w.to.Port() ||
		stun.MessageIntegrity(w.pwd).Check(&m) != nil {
		return true
	}
	q.mu.Lock()
	delete(q.pending, m.TransactionID)
	q.n.Store(int32(len(q.pending)))
	q.mu.Unlock()
	select {
	case w.done <- struct{}{}:
	default:
	}
	return true
}

// consentCreds is what a session's checks are made of.
type consentCreds struct {
	localUfrag, remoteUfrag, remotePwd string
}

// consentRequest builds one check, as pion's own keepalive is built: a
// Binding request with the session's USERNAME, a PRIORITY and
// MESSAGE-INTEGRITY under the peer's password. The peer's ICE agent
// answers it whatever our version. It carries no ICE-CONTROLLING or
// ICE-CONTROLLED: a role attribute the peer's agent finds equal to its
// own (pion may have switched roles after a conflict while checking) is
// a role conflict, which pion answers with an error or by switching its
// role and not answering at all; pion takes a request without one.
func consentRequest(c consentCreds, prio uint32) (*stun.Message, error) {
	return stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(c.remoteUfrag+":"+c.localUfrag),
		ice.PriorityAttr(prio),
		stun.NewShortTermIntegrity(c.remotePwd), stun.Fingerprint)
}

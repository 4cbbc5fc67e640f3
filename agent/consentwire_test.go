package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// consentAnswer builds the answer a peer's ICE agent gives to check req:
// a Binding success with the same transaction ID, integrity under pwd.
func consentAnswer(t *testing.T, req *stun.Message, typ stun.MessageType, pwd string) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), typ,
		&stun.XORMappedAddress{IP: net.IPv4(198, 51, 100, 7), Port: 4000},
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// TestConsentAnswerVerified: only a genuine answer counts for a consent
// check. A stranger who can send from the peer's address (and even one
// who saw the check's transaction ID) cannot keep a dead path alive: a
// wrong password, a binding indication, a response from another address
// are dropped, and the check still waits for the real answer.
func TestConsentAnswerVerified(t *testing.T) {
	creds := consentCreds{localUfrag: "lufr", remoteUfrag: "rufr", remotePwd: "the-peers-password-0123"}
	req, err := consentRequest(creds, 12345)
	if err != nil {
		t.Fatal(err)
	}
	// The request is one the peer's ICE agent accepts: its USERNAME and
	// integrity under the peer's password.
	var u stun.Username
	if err := u.GetFrom(req); err != nil || u.String() != "rufr:lufr" {
		t.Errorf("USERNAME %q (%v), want rufr:lufr", u.String(), err)
	}
	if err := stun.MessageIntegrity(creds.remotePwd).Check(req); err != nil {
		t.Errorf("request integrity: %v", err)
	}
	// No role: a peer's agent whose role differs from ours after a
	// conflict must not see one (it would answer with an error, or
	// switch its role and not answer).
	if req.Contains(stun.AttrICEControlling) || req.Contains(stun.AttrICEControlled) {
		t.Error("the check carries an ICE role attribute")
	}

	peer := netip.MustParseAddrPort("198.51.100.7:4000")
	var q consentChecks
	done := make(chan struct{}, 1)
	q.add(req.TransactionID, consentWait{to: peer, pwd: []byte(creds.remotePwd), sent: time.Now(), done: done})

	forged := []struct {
		name string
		p    []byte
		from netip.AddrPort
	}{
		{"wrong password", consentAnswer(t, req, stun.BindingSuccess, "guessed"), peer},
		{"binding indication", consentAnswer(t, req, stun.NewType(stun.MethodBinding, stun.ClassIndication), creds.remotePwd), peer},
		{"another address", consentAnswer(t, req, stun.BindingSuccess, creds.remotePwd), netip.MustParseAddrPort("198.51.100.8:4000")},
		{"another port", consentAnswer(t, req, stun.BindingSuccess, creds.remotePwd), netip.MustParseAddrPort("198.51.100.7:4001")},
	}
	for _, f := range forged {
		if !q.answer(f.p, f.from) {
			t.Errorf("%s: passed on to ICE, want it dropped", f.name)
		}
		select {
		case <-done:
			t.Errorf("%s: counted as an answer", f.name)
		default:
		}
	}
	other, _ := consentRequest(creds, 1)
	if q.answer(consentAnswer(t, other, stun.BindingSuccess, creds.remotePwd), peer) {
		t.Error("an answer to someone else's transaction was taken from ICE")
	}

	// The genuine answer, from the IPv4-mapped form of the address too.
	if !q.answer(consentAnswer(t, req, stun.BindingSuccess, creds.remotePwd), netip.AddrPortFrom(netip.AddrFrom16(peer.Addr().As16()), peer.Port())) {
		t.Fatal("the genuine answer was not taken")
	}
	select {
	case <-done:
	default:
		t.Fatal("the genuine answer did not count")
	}
	if q.n.Load() != 0 {
		t.Errorf("%d checks still waiting after the answer", q.n.Load())
	}
	if q.answer(consentAnswer(t, req, stun.BindingSuccess, creds.remotePwd), peer) {
		t.Error("a replayed answer was taken; nothing waits for it")
	}
}

// TestConsentWaitsExpire: checks nobody answers do not pile up.
func TestConsentWaitsExpire(t *testing.T) {
	var q consentChecks
	now := time.Now()
	for i := range 1000 {
		m, _ := consentRequest(consentCreds{remotePwd: "x"}, 1)
		q.add(m.TransactionID, consentWait{sent: now.Add(time.Duration(i) * 100 * time.Millisecond)})
	}
	if n := q.n.Load(); n > int32(consentWaitMax/(100*time.Millisecond))+1 {
		t.Errorf("%d checks waiting, want those of the last %v only", n, consentWaitMax)
	}
}

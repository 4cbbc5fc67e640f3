package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/netcheck"
)

// TestPeerNATViewOfPreviousRun: a peer that went offline and came back
// (a restart) is not given the punch order from the NAT views of its
// previous run: we wait for its new views (orderReadyLocked), and tell it
// ours, asking for its own; its ask is answered.
func TestPeerNATViewOfPreviousRun(t *testing.T) {
	a, ps := lazyTestAgent(1)
	p := ps[0] // asleep: kick makes no ICE agent here
	a.ctl = &controlClient{log: slog.New(slog.DiscardHandler), out: make(chan control.Message, 16), connected: true}
	a.nat.filtering, a.nat.probed = netcheck.AddrPortDependent, true
	online := p.node
	online.Online = true
	p.update(online)
	p.handleSignal(&control.Signal{Kind: control.SignalInfo, Filtering: netcheck.AddrPortDependent, SyncOpen: true, Birthday: true})
	p.mu.Lock()
	if got := decideOrder(a.selfNATView(), p.peerNATViewLocked(), p.controlling); got != orderSync {
		t.Fatalf("before the restart: order %v, want synchronized open", got)
	}
	p.mu.Unlock()
	drainInfo(a) // what the first online told it

	offline := online
	offline.Online = false
	p.update(offline)
	p.update(online)
	now := time.Now()
	p.mu.Lock()
	if p.orderReadyLocked(now) {
		t.Errorf("order ready at once after the peer came back, from its old view %+v", p.peerNATViewLocked())
	}
	if got := decideOrder(a.selfNATView(), p.peerNATViewLocked(), p.controlling); got != orderTogether {
		t.Errorf("after the peer came back: order %v from its previous run's view", got)
	}
	if !p.orderReadyLocked(now.Add(punchInfoWait)) {
		t.Error("still waiting for the peer's view after punchInfoWait")
	}
	p.mu.Unlock()
	a.natInfoTick(now)
	if got := drainInfo(a); len(got) != 1 || got[0].To != p.id || !got[0].Ask || got[0].Filtering != netcheck.AddrPortDependent {
		t.Fatalf("after the peer came back we sent %+v, want one info with our filtering asking for its views", got)
	}

	// The new run answers with its views; its own ask gets ours.
	p.handleSignal(&control.Signal{Kind: control.SignalInfo, Filtering: netcheck.AddrPortDependent, SyncOpen: true, Ask: true})
	p.mu.Lock()
	if !p.orderReadyLocked(now) || decideOrder(a.selfNATView(), p.peerNATViewLocked(), p.controlling) != orderSync {
		t.Errorf("with the new run's view: ready %v, order %v; want ready, synchronized open", p.orderReadyLocked(now),
			decideOrder(a.selfNATView(), p.peerNATViewLocked(), p.controlling))
	}
	p.mu.Unlock()
	a.natInfoTick(now)
	if got := drainInfo(a); len(got) != 1 || got[0].Ask {
		t.Fatalf("the peer's ask got %+v, want one info without an ask", got)
	}
}

// TestOfferHeldUntilMeasured: a fresh run (no NAT view yet) holds a
// peer's direct offer, so its answer says what it measured, for at most
// punchInfoWait; the relay lane's offers never wait.
func TestOfferHeldUntilMeasured(t *testing.T) {
	_, ps := lazyTestAgent(1)
	p := ps[0]
	offer := &control.Signal{Kind: control.SignalOffer, Session: "s1"}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.direct.holdOfferLocked(offer) || p.direct.heldOffer == nil || p.direct.heldOffer.Session != "s1" {
		t.Fatal("direct offer answered before our NAT was measured")
	}
	cand := &control.Signal{Kind: control.SignalCandidate, Session: "s1", Candidate: "c"}
	if !p.direct.holdCandidateLocked(cand) || len(p.direct.heldCands) != 1 {
		t.Fatal("a candidate of the held offer was not kept: the peer trickles each once")
	}
	if p.direct.holdCandidateLocked(&control.Signal{Kind: control.SignalCandidate, Session: "s0"}) {
		t.Error("a candidate of another session kept")
	}
	if p.relay.holdOfferLocked(offer) {
		t.Error("relay offer held")
	}
	p.waitFrom = time.Now().Add(-punchInfoWait)
	if p.direct.holdOfferLocked(offer) {
		t.Error("offer still held after punchInfoWait")
	}
	p.waitFrom = time.Now()
	p.a.nat.filtering = netcheck.AddrPortDependent
	if p.direct.holdOfferLocked(offer) {
		t.Error("offer held with our NAT measured")
	}
}

// TestOrderFromExchangedViews: both sides decide from what their offer
// and answer said (natSignal.view on each end), so they agree.
func TestOrderFromExchangedViews(t *testing.T) {
	sigs := []natSignal{
		{}, {filtering: netcheck.AddrPortDependent}, {filtering: netcheck.AddrPortDependent, openTTL: 3},
		{filtering: netcheck.AddressDependent}, {label: natSymmetric, filtering: netcheck.AddrPortDependent},
		{label: natPortMapped, filtering: netcheck.AddrPortDependent},
	}
	agree := func(c, d punchOrder) bool {
		opens := func(o punchOrder) bool { return o == orderFirst || o == orderOpenLow }
		return c == d && (c == orderTogether || c == orderSync) || opens(c) && d == orderWait || c == orderWait && opens(d)
	}
	for _, x := range sigs {
		for _, y := range sigs {
			// What each sent, and read back through a signal.
			var sx, sy control.Signal
			x.fill(&sx)
			y.fill(&sy)
			px := natSignal{label: sx.NAT, filtering: sx.Filtering, openTTL: sx.OpenTTL}.view(sx.SyncOpen)
			py := natSignal{label: sy.NAT, filtering: sy.Filtering, openTTL: sy.OpenTTL}.view(sy.SyncOpen)
			c, d := decideOrder(x.view(true), py, true), decideOrder(y.view(true), px, false)
			if !agree(c, d) {
				t.Errorf("%+v vs %+v: controlling %v, controlled %v", x, y, c, d)
			}
		}
	}
}

func drainInfo(a *Agent) []control.Signal {
	var out []control.Signal
	for {
		select {
		case m := <-a.ctl.out:
			if m.Signal != nil && m.Signal.Kind == control.SignalInfo {
				out = append(out, *m.Signal)
			}
		default:
			return out
		}
	}
}

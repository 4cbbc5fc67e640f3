package agent

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/metrics"
)

// Paths on demand (issue 16). Every peer costs two ICE sessions, a relay
// allocation and a WireGuard peer while it is connected; in a big mesh
// most peers never exchange a packet. A lazy agent keeps its peers asleep
// (nothing but the netmap entry) and sets a path up only when a packet
// from the TUN is addressed to the peer (lazytun.go), the peer signals
// us, or `meshvpn ping` / `status --peer` asks for it. A path with no
// traffic for LazyIdle is torn down again.

// Lazy modes (--lazy-peers).
const (
	LazyAuto = "auto"
	LazyOn   = "on"
	LazyOff  = "off"
)

// LazyAutoPeers: with --lazy-peers auto, an agent with more peers than
// this is lazy. bench-mesh at 40 agents (39 peers) measured an eager agent
// at 49-59 MiB and 67-69 coordinator sockets: past the goals of
// 40 MB and 4 sockets, while 20 (19 peers) stayed near 33 MiB.
const LazyAutoPeers = 32

// DefaultLazyIdle is how long an on-demand path may carry no packet
// before it is torn down.
const DefaultLazyIdle = 10 * time.Minute

// lazyQuiet: a lazy peer whose path has carried nothing for this long and
// then breaks goes back to sleep instead of being repaired (the next
// packet sets it up again). That is also how the two sides agree on a
// teardown: the peer that tears down first breaks the other's path, and
// the other, seeing no traffic either, follows once its consent checks
// go unanswered (at the next idle check, consent.go) instead of asking
// it for a new session.
const lazyQuiet = 5 * time.Second

// lazyRelayDelay: an on-demand peer's relay lane starts only when the
// direct lane is not up this long after the wake (or goes down later);
// lazyRelayLinger: a relay lane not carrying traffic is closed once the
// direct lane has been up this long. So a direct peer costs the relay
// no allocation.
const (
	lazyRelayDelay  = 2 * time.Second
	lazyRelayLinger = 10 * time.Second
)

// ParseLazyMode checks a --lazy-peers value.
func ParseLazyMode(s string) (string, error) {
	switch s {
	case "", LazyAuto:
		return LazyAuto, nil
	case LazyOn, LazyOff:
		return s, nil
	}
	return "", fmt.Errorf("--lazy-peers %q: want auto, on or off", s)
}

// lazyAutoEager: an auto agent that turned lazy turns eager again only
// at this many peers or fewer, so a mesh near the threshold does not make
// it set up and tear down every path in turn.
const lazyAutoEager = LazyAutoPeers * 3 / 4

// lazyTurnGrace: when an agent turns lazy (its mesh grew past the
// threshold, e.g. while many nodes join at once), the paths it set up
// eagerly get this long to carry traffic before they are torn down like
// idle ones.
const lazyTurnGrace = 30 * time.Second

// lazyFor tells whether an agent in mode with n peers is lazy, being lazy
// now or not (the hysteresis of auto).
func lazyFor(mode string, n int, now bool) bool {
	switch mode {
	case LazyOn:
		return true
	case LazyOff:
		return false
	}
	if now {
		return n > lazyAutoEager
	}
	return n > LazyAutoPeers
}

// updateLazy sets whether the agent is lazy for a mesh of n peers.
func (a *Agent) updateLazy(n int) {
	was := a.lazyActive.Load()
	on := lazyFor(a.cfg.LazyPeers, n, was)
	if was == on {
		return
	}
	a.lazyActive.Store(on)
	a.log.Info("paths on demand", "lazy", on, "peers", n, "mode", a.cfg.LazyPeers, "idle_after", a.lazyIdle())
	if on {
		// Count from now, with a short grace instead of the whole idle
		// time.
		from := time.Now().Add(lazyTurnGrace - a.lazyIdle())
		for _, p := range a.peerList() {
			p.mu.Lock()
			if p.lastUsed.After(from) {
				p.lastUsed = from
			}
			p.mu.Unlock()
		}
	}
}

func (a *Agent) lazyIdle() time.Duration {
	if a.cfg.LazyIdle > 0 {
		return a.cfg.LazyIdle
	}
	return DefaultLazyIdle
}

// wake sets a sleeping peer's path up. kick: start negotiating now (a
// packet or a local request); a signal that woke it is handled by the
// caller instead.
func (p *peer) wake(why string, kick bool) {
	p.mu.Lock()
	if p.closed || !p.asleep {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	p.asleep = false
	p.sleeping.Store(false)
	p.wokeAt, p.lastUsed, p.waitFrom = now, now, now
	// direct_after_ms then says how long the on-demand path took.
	p.onlineAt, p.directAfter = now, 0
	p.lastChange, p.changedAt = "woken: "+why, now
	p.mu.Unlock()
	p.log.Debug("peer woken", "why", why)
	if kick {
		p.kick()
	}
}

// wakeAsync wakes the peer off the data path, once per sleep.
func (p *peer) wakeAsync(why string) {
	if p.sleeping.Load() && p.waking.CompareAndSwap(false, true) {
		go func() {
			defer p.waking.Store(false)
			p.wake(why, true)
		}()
	}
}

// sleep tears the peer's path down: ICE sessions closed (and with them the
// relay allocation), WireGuard peer removed, queued packets dropped.
func (p *peer) sleep(why string) {
	p.mu.Lock()
	if p.closed || p.asleep {
		p.mu.Unlock()
		return
	}
	p.asleep = true
	p.sleeping.Store(true)
	p.ready.Store(false)
	p.queue.drop()
	p.direct.closeICELocked()
	p.relay.closeICELocked()
	p.dropPunchedLocked("")
	p.active, p.wgAdded = nil, false
	p.live = liveness{}
	p.lastChange, p.changedAt = why, time.Now()
	p.mu.Unlock()
	// Taking wgMu waits for a WireGuard change in flight; later ones see
	// asleep and do nothing.
	p.wgMu.Lock()
	err := p.a.wg.removePeer(p.key)
	p.wgEarly = false
	p.wgMu.Unlock()
	if err != nil {
		p.log.Error("remove WireGuard peer of an idle path", "err", err)
	}
	p.log.Debug("path torn down", "why", why)
}

// lazyTick runs every second: it folds the data path's use marks into
// lastUsed, puts idle peers to sleep (lazy) or wakes sleeping ones (the
// agent is eager again: the mesh shrank), expires queued packets, and
// closes relay lanes that a direct path made redundant.
func (a *Agent) lazyTick(now time.Time) {
	lazy := a.lazyActive.Load()
	idle := a.lazyIdle()
	for _, p := range a.peerList() {
		p.queue.expire(now)
		used := p.used.Swap(false)
		p.mu.Lock()
		if used {
			p.lastUsed = now
		}
		asleep, online := p.asleep, p.node.Online
		quiet := now.Sub(p.lastUsed)
		broken := p.active != nil && !p.direct.up() && !p.relay.up() && !p.punched.up()
		p.lingerRelayLocked(now, lazy)
		p.mu.Unlock()
		switch {
		case asleep && !lazy && online:
			p.wake("paths are set up eagerly again", true)
		case !asleep && lazy && quiet >= idle:
			p.sleep(fmt.Sprintf("idle: no traffic for %s", quiet.Round(time.Second)))
		case !asleep && lazy && broken && quiet >= lazyQuiet:
			p.sleep(fmt.Sprintf("path lost after %s without traffic", quiet.Round(time.Second)))
		}
	}
}

// lingerRelayLocked closes the relay lane of an on-demand peer whose
// direct lane has been up for lazyRelayLinger, unless traffic uses it.
func (p *peer) lingerRelayLocked(now time.Time, lazy bool) {
	if !p.direct.up() {
		p.directUpSince = time.Time{}
		return
	}
	if p.directUpSince.IsZero() {
		p.directUpSince = now
	}
	if lazy && p.relay.ice != nil && p.active != &p.relay && now.Sub(p.directUpSince) >= lazyRelayLinger {
		p.relay.closeICELocked()
	}
}

// relayWantedLocked tells whether the relay lane should run on our
// initiative: always when eager; when lazy, only while the direct lane is
// not up and has had lazyRelayDelay since the wake. The peer's own offers
// and restart requests are still answered.
func (p *peer) relayWantedLocked(now time.Time) bool {
	if !p.a.lazyActive.Load() {
		return true
	}
	if p.direct.up() || p.quietLocked(now) {
		return false // an unused path that broke goes to sleep instead
	}
	return now.Sub(p.wokeAt) >= lazyRelayDelay || p.directHopelessLocked()
}

// quietLocked tells a lazy peer whose path carried nothing for lazyQuiet.
func (p *peer) quietLocked(now time.Time) bool {
	return p.a.lazyActive.Load() && now.Sub(p.lastUsed) >= lazyQuiet
}

// directHopelessLocked: both NAT views rule a direct path out (both
// symmetric with no port mapping, or UDP blocked on either side), so the
// relay need not wait for the direct session to fail.
func (p *peer) directHopelessLocked() bool {
	mine := p.a.natLabel()
	return mine == natUDPBlocked || p.peerNAT == natUDPBlocked ||
		(mine == natSymmetric && p.peerNAT == natSymmetric)
}

// wakeBySignal decides whether a signal may wake a sleeping peer: only
// one that asks for a session (an offer or a restart request), and only
// with a token of the session budget (pace.go), which pays for the
// session the signal starts. So peers signalling together cannot make us
// open sessions faster than the budget; other signals to a sleeping peer
// are dropped (they belong to no session of ours).
func (p *peer) wakeBySignal(kind string) bool {
	if !p.sleeping.Load() {
		return true
	}
	if !sessionAsk(kind) {
		return false
	}
	if ok, _ := p.a.pace.take(time.Now()); !ok {
		p.a.logLimit.Log(p.log, slog.LevelDebug, "signal left a sleeping peer asleep: session budget spent", "kind", kind)
		return false
	}
	p.mu.Lock()
	p.paid = true
	p.mu.Unlock()
	p.wake("the peer asked for a session", false)
	return true
}

// takeSessionLocked charges a session start to the budget, or to the
// token a waking signal already paid.
func (p *peer) takeSessionLocked(now time.Time) (bool, time.Time) {
	if p.paid {
		p.paid = false
		return true, time.Time{}
	}
	return p.a.pace.take(now)
}

// sessionAsk tells the signals that ask us for a session.
func sessionAsk(kind string) bool {
	return kind == control.SignalOffer || kind == control.SignalRestart
}

// sendNATInfo tells a sleeping peer that joined after our NAT probe what
// we know of our network, so that its first session (on demand, perhaps
// much later) need not wait for the views (punchInfoWait).
func (a *Agent) sendNATInfo(p *peer) {
	if !p.sleeping.Load() {
		return // an eager peer's offers carry it
	}
	n := &a.nat
	n.mu.Lock()
	probed := n.probed
	n.mu.Unlock()
	if probed {
		// Paced (natinfo.go): a netmap of thousands adds them all at once.
		a.queueNATInfo(p)
	}
}

// wakeFor wakes the peer named or addressed target, for a local request
// (ping, status --peer).
func (a *Agent) wakeFor(target string) {
	for _, p := range a.peerList() {
		p.mu.Lock()
		match := p.node.Name == target || p.node.IP == target
		p.mu.Unlock()
		if match {
			p.wake("asked for locally", true)
			return
		}
	}
}

// registerLazyMetrics adds the session budget's and the packet queue's
// counters to the agent's metrics.
func (a *Agent) registerLazyMetrics() {
	r := a.metrics.reg
	r.CounterFunc("meshvpn_agent_sessions_deferred_total",
		"ICE session starts the session budget put off to a later tick.", nil,
		func() []metrics.Sample { return []metrics.Sample{{Value: float64(a.pace.deferred.Load())}} })
	r.GaugeFunc("meshvpn_agent_queued_packets",
		"Packets waiting for a path being set up on demand.", nil,
		func() []metrics.Sample { return []metrics.Sample{{Value: float64(a.queued.Load())}} })
}

package agent

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/portmap"
)

// Port mapping: the agent asks the gateway (PCP, NAT-PMP or UPnP) to
// forward the shared socket's port and offers the forwarded address to every
// peer as one more ICE candidate. A peer's checks to it arrive on the shared
// socket through the router's forward, whatever the router's NAT otherwise
// does, so even a symmetric NAT gets a direct path.
//
// pion/ice has no API to add an arbitrary local candidate, and it need not
// have one: the candidate only has to reach the peer. We signal it like any
// gathered candidate, as server-reflexive (it is an address of the router,
// like a STUN-observed one), with a priority between host and srflx. The
// peer's checks carry our session's ufrag, so the UDP mux hands them to the
// right ICE agent, which answers them and learns the peer's address as a
// peer-reflexive remote candidate.

// portmapTypePreference ranks the mapped address above server-reflexive
// (100) and peer-reflexive (110) candidates and below host ones (126).
const portmapTypePreference = 120

// portmapRefreshEvery is how often the mapping is checked: renewal is due at
// half-life (an hour), but a NAT-PMP/PCP gateway that rebooted is noticed
// within this interval.
const portmapRefreshEvery = time.Minute

// portmapStartBudget bounds the first mapping before the agent joins the
// stream; a slower gateway's mapping is offered when it comes.
const portmapStartBudget = 3 * time.Second

type portMapper struct {
	a      *Agent
	client *portmap.Client

	mu     sync.Mutex
	cur    portmap.Mapping
	have   bool
	err    string
	reason string // errReason of the last failure; "" after a success
}

// errReason is what a failure is logged once for: without a gateway the
// error names the ephemeral ports tried, and a host without one retries
// every minute, so those ports must not make each retry a new reason.
func errReason(err error) string {
	if errors.Is(err, portmap.ErrNoGateway) {
		return portmap.ErrNoGateway.Error()
	}
	return err.Error()
}

// PortMapStatus is the local port mapping shown by `meshvpn status`.
type PortMapStatus struct {
	// Protocol is "pcp", "nat-pmp" or "upnp"; empty when there is no mapping.
	Protocol string `json:"protocol,omitempty"`
	// External is the router's address and forwarded port peers are offered.
	External string `json:"external,omitempty"`
	// LeaseLeftS is the lease left in seconds; -1 for a permanent mapping.
	LeaseLeftS int64 `json:"lease_left_s"`
	// Error says why there is no mapping (e.g. no gateway answered).
	Error string `json:"error,omitempty"`
}

// startPortmap maps the shared socket's port (waiting at most
// portmapStartBudget) and keeps the mapping alive until ctx ends.
func (a *Agent) startPortmap(ctx context.Context) {
	if a.cfg.NoPortmap {
		return
	}
	pm := &portMapper{a: a, client: portmap.NewClient(portmap.Config{Logger: a.log})}
	a.portmap.Store(pm)
	first := make(chan struct{})
	go pm.run(ctx, first)
	select {
	case <-first:
	case <-time.After(portmapStartBudget):
	case <-ctx.Done():
	}
}

// stopPortmap deletes the mapping from the gateway.
func (a *Agent) stopPortmap() {
	pm := a.portmap.Load()
	if pm == nil {
		return
	}
	pm.mu.Lock()
	pm.have = false
	pm.mu.Unlock()
	_ = pm.client.Close() // logs its own errors
}

func (pm *portMapper) run(ctx context.Context, first chan struct{}) {
	port := pm.a.bind.Port()
	m, err := pm.client.Map(ctx, port)
	pm.set(m, err)
	close(first)
	// A gateway's announcement (after a reboot) triggers a renewal at once;
	// without the listener (port 5350 taken) the minute's check remains.
	announced, aerr := pm.client.Announcements(ctx)
	if aerr != nil {
		pm.a.log.Debug("not listening for gateway announcements", "err", aerr)
	}
	t := time.NewTicker(portmapRefreshEvery)
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-announced:
			force = true
		}
		if _, ok := pm.client.Current(); ok && force {
			pm.a.log.Info("gateway announced a change; renewing the port mapping")
			m, err = pm.client.Renew(ctx)
		} else if ok {
			m, err = pm.client.Refresh(ctx)
		} else {
			// No mapping yet (no gateway, or it refused): try again now and
			// then, a router may get UPnP switched on or come back.
			m, err = pm.client.Map(ctx, port)
		}
		if ctx.Err() != nil {
			return
		}
		pm.set(m, err)
	}
}

// set records the result of a mapping attempt and, when the offered address
// changed, renegotiates with every peer so that it learns the new one.
func (pm *portMapper) set(m portmap.Mapping, err error) {
	pm.mu.Lock()
	old, hadOld, oldReason := pm.cur.External, pm.have, pm.reason
	if err != nil {
		pm.err, pm.reason = err.Error(), errReason(err)
		// A mapping whose renewal failed stays offered while its lease runs.
		if cur, ok := pm.client.Current(); ok {
			pm.cur, pm.have = cur, true
		} else {
			pm.have = false
		}
	} else {
		pm.cur, pm.have, pm.err, pm.reason = m, true, "", ""
	}
	changed := pm.have != hadOld || (pm.have && pm.cur.External != old)
	pm.mu.Unlock()
	if err != nil && errReason(err) != oldReason {
		// Once per new reason: a host without a mapping gateway retries
		// every minute and need not say so each time.
		pm.a.log.Warn("no port mapping offered", "err", err)
	}
	if changed {
		pm.a.log.Info("port-mapped candidate changed; renegotiating with peers", "external", pm.cur.External, "offered", pm.have)
		pm.a.renegotiateAll()
	}
}

// mapping returns the mapping to offer, if any.
func (a *Agent) portMapping() (portmap.Mapping, bool) {
	pm := a.portmap.Load()
	if pm == nil {
		return portmap.Mapping{}, false
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.have && pm.cur.Lease > 0 && time.Now().After(pm.cur.Expires()) {
		return portmap.Mapping{}, false
	}
	return pm.cur, pm.have
}

// portmapFoundation starts the foundation of a port-mapped candidate, so
// that the peer that selects it can say so in its status.
const portmapFoundation = "portmap"

// candidateLabel is the candidate's type for `status`, with "portmap" for a
// peer's port-mapped candidate (signalled as srflx).
func candidateLabel(c ice.Candidate) string {
	if c.Type() == ice.CandidateTypeServerReflexive && strings.HasPrefix(c.Foundation(), portmapFoundation) {
		return "portmap"
	}
	return c.Type().String()
}

// portmapCandidate is the mapped address as an ICE candidate string.
func (a *Agent) portmapCandidate() (string, bool) {
	m, ok := a.portMapping()
	if !ok {
		return "", false
	}
	c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
		Network:    "udp",
		Address:    m.External.Addr().String(),
		Port:       int(m.External.Port()),
		Component:  1,
		Priority:   portmapTypePreference<<24 | 65535<<8 | 255,
		Foundation: portmapFoundation + strconv.Itoa(int(m.External.Port())),
		RelAddr:    "0.0.0.0",
		RelPort:    int(m.InternalPort),
	})
	if err != nil {
		a.log.Warn("port-mapped candidate", "err", err)
		return "", false
	}
	return c.Marshal(), true
}

// offerPortmapLocked sends the port-mapped candidate for the direct lane's
// session, next to the candidates ICE gathers. Called with p.mu held.
func (l *lane) offerPortmapLocked() {
	if l.relay() {
		return
	}
	c, ok := l.p.a.portmapCandidate()
	if !ok || l.session == "" {
		return
	}
	l.p.log.Debug("offering port-mapped candidate", "candidate", c)
	l.signal(control.Signal{Kind: control.SignalCandidate, Session: l.session, Candidate: c})
}

// renegotiateAll starts a new session with every online peer, so that each
// learns the current port-mapped candidate (or stops trying an old one). The
// WireGuard endpoint stays in place until the new session selects a pair.
func (a *Agent) renegotiateAll() {
	for _, p := range a.peerList() {
		p.mu.Lock()
		if !p.closed && p.node.Online && p.direct.ice != nil {
			p.direct.retry.reset()
			if p.controlling {
				p.direct.startLocked()
			} else {
				p.direct.requestRestartLocked()
			}
		}
		p.mu.Unlock()
	}
}

// portmapStatus is the status of the local mapping; nil with --no-portmap.
func (a *Agent) portmapStatus() *PortMapStatus {
	pm := a.portmap.Load()
	if pm == nil {
		return nil
	}
	m, ok := a.portMapping()
	pm.mu.Lock()
	errText := pm.err
	pm.mu.Unlock()
	if !ok {
		if errText == "" {
			errText = "mapping in progress"
		}
		return &PortMapStatus{Error: errText, LeaseLeftS: 0}
	}
	st := &PortMapStatus{Protocol: string(m.Protocol), External: m.External.String(), LeaseLeftS: -1}
	if m.Lease > 0 {
		st.LeaseLeftS = int64(time.Until(m.Expires()) / time.Second)
	}
	return st
}

// portmapEndpoint lists the mapped address among the node's endpoints.
func (a *Agent) portmapEndpoint() (EndpointStatus, bool) {
	m, ok := a.portMapping()
	if !ok {
		return EndpointStatus{}, false
	}
	return EndpointStatus{Addr: netip.AddrPortFrom(m.External.Addr(), m.External.Port()).String(), Type: "portmap"}, true
}

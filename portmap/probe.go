package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// ProbeResult says which port-mapping protocols the gateway offers.
type ProbeResult struct {
	Gateway netip.Addr `json:"gateway"`
	// Local is this host's address towards the gateway.
	Local  netip.Addr `json:"local"`
	PCP    bool       `json:"pcp"`
	NATPMP bool       `json:"nat_pmp"`
	UPnP   bool       `json:"upnp"`
	// External is the gateway's external address as NAT-PMP or UPnP named
	// it (invalid when neither did).
	External netip.Addr `json:"external,omitzero"`
	// ExternalProblem is set when External is no public address (double
	// NAT): a mapping would not make this host reachable.
	ExternalProblem string `json:"external_problem,omitempty"`
	// Errors says, per protocol that did not answer, why.
	Errors map[Protocol]string `json:"errors,omitempty"`
}

// Any tells whether at least one protocol answered.
func (r ProbeResult) Any() bool { return r.PCP || r.NATPMP || r.UPnP }

func (r ProbeResult) errorText() string {
	var parts []string
	for p, e := range r.Errors {
		parts = append(parts, fmt.Sprintf("%s: %s", p, e))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// Probe asks the gateway, with all three protocols at once, which of them
// it speaks: PCP and NAT-PMP within cfg.ProbeTimeout (250 ms by default),
// UPnP within that plus ssdpAnswerDelay. It maps nothing. The error is only
// for a host without a gateway (no default route); a gateway that answers
// nothing gives a result with all false.
func Probe(ctx context.Context, cfg Config) (ProbeResult, error) {
	found, err := probeAll(ctx, cfg.withDefaults(), true)
	return found.result, err
}

type probeFound struct {
	result  ProbeResult
	working []mapper // in order of preference
}

// probeAll asks all three protocols at once. UPnP gets ssdpAnswerDelay
// more than the others: IGDs wait a random part of the search's MX before
// they answer (miniupnpd does so even for a unicast search), so a 250 ms
// budget missed them now and then. Unless every protocol's answer is
// wanted (all, for netcheck), the UPnP wait ends as soon as PCP or NAT-PMP,
// which are preferred to it, have answered: a mapping is not delayed by
// a search whose result would not be used.
func probeAll(ctx context.Context, cfg Config, all bool) (probeFound, error) {
	var f probeFound
	gw, err := findGateway(cfg)
	if err != nil {
		return f, err
	}
	local, err := localAddrTo(gw)
	if err != nil {
		return f, err
	}
	f.result = ProbeResult{Gateway: gw, Local: local, Errors: map[Protocol]string{}}
	clients := map[Protocol]mapper{
		PCP:    newPCPClient(gw, cfg.pmpPort, local),
		NATPMP: newPMPClient(gw, cfg.pmpPort),
		UPnP:   newUPnPClient(cfg, gw, local),
	}
	type answer struct {
		ext netip.Addr
		err error
	}
	answers := map[Protocol]answer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
	defer cancel()
	uctx, ucancel := context.WithTimeout(ctx, cfg.ProbeTimeout+ssdpAnswerDelay)
	defer ucancel()
	for p, m := range clients {
		if !cfg.enabled(p) {
			continue
		}
		wg.Go(func() {
			c := pctx
			if p == UPnP {
				c = uctx
			}
			ext, err := m.probe(c)
			err = bounded(err)
			mu.Lock()
			answers[p] = answer{ext, err}
			mu.Unlock()
			if err == nil && p != UPnP && !all {
				ucancel()
			}
		})
	}
	wg.Wait()
	for _, p := range preference {
		a, asked := answers[p]
		switch {
		case !asked:
			f.result.Errors[p] = "disabled"
			continue
		case a.err != nil:
			f.result.Errors[p] = a.err.Error()
			continue
		}
		f.working = append(f.working, clients[p])
		switch p {
		case PCP:
			f.result.PCP = true
		case NATPMP:
			f.result.NATPMP = true
		case UPnP:
			f.result.UPnP = true
		}
		if a.ext.IsValid() && !f.result.External.IsValid() {
			f.result.External = a.ext
			if err := checkExternal(a.ext); err != nil {
				f.result.ExternalProblem = err.Error()
			}
		}
	}
	if len(f.result.Errors) == 0 {
		f.result.Errors = nil
	}
	if !f.result.Any() {
		cfg.Logger.Debug("no port-mapping protocol answered", "gateway", gw, "errors", f.result.errorText())
	}
	return f, nil
}

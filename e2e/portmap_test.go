package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// The port-mapping tests put an agent behind a router whose NAT is
// symmetric but which runs real miniupnpd, and peers behind a symmetric and
// a port-restricted NAT. Without the router's port forward neither pair has
// a direct path (TestMeshAllNATPairs skips them as relay-only); with it both
// must be direct, and the peers must be talking to the forwarded port.

func TestPortmapUPnPAndNATPMP(t *testing.T) {
	testPortmap(t, natlab.UPnPAndPMP, []string{"pcp"})
}

func TestPortmapNATPMPOnly(t *testing.T) {
	// miniupnpd's NAT-PMP switch serves PCP too, and the agent prefers PCP;
	// NAT-PMP alone against miniupnpd is covered by natlab's TestMiniUPnPd.
	testPortmap(t, natlab.PMPOnly, []string{"pcp", "nat-pmp"})
}

func TestPortmapUPnPOnly(t *testing.T) {
	testPortmap(t, natlab.UPnPOnly, []string{"upnp"})
}

func testPortmap(t *testing.T, mode natlab.UPnPMode, protocols []string) {
	lab, coord := newLab(t)
	ctx := t.Context()
	stun, err := lab.AddCoturnSTUN("stun", "203.0.113.40", "203.0.113.41")
	if err != nil {
		t.Fatal(err)
	}
	key := authKey(t, coord, true)
	home := addSiteAgent(t, lab, coord, "home", natlab.Symmetric)
	upnpd, err := home.Host.Site.StartMiniUPnPd(ctx, stun, mode)
	if err != nil {
		t.Fatal(err)
	}
	sym := addSiteAgent(t, lab, coord, "sym", natlab.Symmetric)
	pr := addSiteAgent(t, lab, coord, "pr", natlab.PortRestricted)
	agents := []*meshlab.Agent{home, sym, pr}
	for _, a := range agents {
		if err := a.Start(key); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, agents, 60*time.Second); err != nil {
		t.Fatalf("mesh did not come up: %v", err)
	}

	// The mapping: on the router's WAN address, by a protocol the mode offers.
	var pm *meshlab.PortMap
	err = natlab.Poll(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		st, err := home.Status(ctx)
		if err != nil {
			return err
		}
		if st.Self.PortMap == nil {
			return natlab.Fatal(fmt.Errorf("status has no portmap field"))
		}
		pm = st.Self.PortMap
		if pm.Protocol == "" {
			return fmt.Errorf("no mapping yet: %s", pm.Error)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("home got no port mapping: %v", err)
	}
	t.Logf("home's mapping: %s %s, lease %ds left", pm.Protocol, pm.External, pm.LeaseLeftS)
	if !slices.Contains(protocols, pm.Protocol) {
		t.Errorf("mapped with %s, want one of %v", pm.Protocol, protocols)
	}
	if want := home.Host.Site.Router.IP.String() + ":"; !strings.HasPrefix(pm.External, want) {
		t.Errorf("mapped external %s, want the router's WAN address %s", pm.External, want)
	}
	if pm.LeaseLeftS < 3000 {
		t.Errorf("lease left %ds, want about 2 h", pm.LeaseLeftS)
	}
	text, err := home.Host.Run(ctx, coord.Bins.Agent, "status", "--socket", home.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if want := "portmap: " + pm.Protocol + " " + pm.External + " (lease "; !strings.Contains(text, want) {
		t.Errorf("`meshvpn status` does not show %q:\n%s", want, text)
	}
	rules, err := upnpd.Redirects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("miniupnpd redirects: %v", rules)
	extPort := pm.External[strings.LastIndex(pm.External, ":")+1:]
	if len(rules) != 1 || !strings.Contains(rules[0], "dport "+extPort) || !strings.Contains(rules[0], home.Host.IP.String()) {
		t.Errorf("router redirects %v, want one for port %s to %s", rules, extPort, home.Host.IP)
	}

	// Both hard pairs are direct, and the peers send to the forwarded port.
	for _, peer := range []*meshlab.Agent{sym, pr} {
		t.Run("home-"+peer.Name, func(t *testing.T) {
			checkDirectPair(t, home, peer, overlayIP(t, peer))
			st, err := peer.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			p := st.Peer("home")
			if p == nil {
				t.Fatal("peer does not list home")
			}
			if p.Endpoint != pm.External || p.RemoteType != "portmap" {
				t.Errorf("%s reaches home at %s (remote candidate %s), want the port-mapped candidate %s", peer.Name, p.Endpoint, p.RemoteType, pm.External)
			}
		})
	}

	// Stopping the agent deletes the forward from the router.
	if err := home.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop home: %v", err)
	}
	err = natlab.Poll(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		rules, err := upnpd.Redirects(ctx)
		if err != nil {
			return err
		}
		if len(rules) != 0 {
			return fmt.Errorf("router still redirects: %v", rules)
		}
		return nil
	})
	if err != nil {
		t.Errorf("mapping not removed when the agent stopped: %v", err)
	}
	if !strings.Contains(home.Proc.Log(), "port mapping deleted") {
		t.Errorf("home's log does not say the mapping was deleted")
	}
}

// TestPortmapRouterReboot: a router that reboots forgets its port forwards,
// starts a new PCP epoch and announces itself; the agent notices (at once
// from the announcement, else within a minute from the epoch) and maps the
// same port again.
func TestPortmapRouterReboot(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	stun, err := lab.AddCoturnSTUN("stun", "203.0.113.40", "203.0.113.41")
	if err != nil {
		t.Fatal(err)
	}
	home := addSiteAgent(t, lab, coord, "home", natlab.Symmetric)
	upnpd, err := home.Host.Site.StartMiniUPnPd(ctx, stun, natlab.UPnPAndPMP)
	if err != nil {
		t.Fatal(err)
	}
	if err := home.Start(authKey(t, coord, false)); err != nil {
		t.Fatal(err)
	}
	waitRedirect := func(what string) string {
		t.Helper()
		var rules []string
		err := natlab.Poll(ctx, 90*time.Second, time.Second, func() error {
			if err := home.Running(); err != nil {
				return natlab.Fatal(err)
			}
			var err error
			rules, err = upnpd.Redirects(ctx)
			if err != nil {
				return err
			}
			if len(rules) != 1 || !strings.Contains(rules[0], home.Host.IP.String()) {
				return fmt.Errorf("router redirects %v", rules)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return rules[0]
	}
	before := waitRedirect("first mapping")
	start := time.Now()
	if err := upnpd.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	// Reboot emptied the chains; a redirect now is a new mapping, which
	// the new miniupnpd process logs.
	after := waitRedirect("mapping after the router rebooted")
	if !strings.Contains(upnpd.Proc.Log(), "port mapping accepted") {
		t.Errorf("the rebooted miniupnpd granted no mapping, yet redirects %s", after)
	}
	t.Logf("mapped again %v after the reboot: %s (before: %s)", time.Since(start).Round(time.Second), after, before)
	if after != before {
		t.Errorf("external port changed across the reboot: %s, was %s (the agent asks for the old one)", after, before)
	}
	if log := home.Proc.Log(); !strings.Contains(log, "gateway announced a change") && !strings.Contains(log, "epoch went back") {
		t.Errorf("agent log does not say it noticed the reboot")
	}
}

// TestPortmapDisabled: with --no-portmap the agent leaves the router alone
// and its status says the mapping is off.
func TestPortmapDisabled(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	stun, err := lab.AddCoturnSTUN("stun", "203.0.113.40", "203.0.113.41")
	if err != nil {
		t.Fatal(err)
	}
	home := addSiteAgent(t, lab, coord, "home", natlab.Symmetric)
	upnpd, err := home.Host.Site.StartMiniUPnPd(ctx, stun, natlab.UPnPAndPMP)
	if err != nil {
		t.Fatal(err)
	}
	home.ExtraArgs = []string{"--no-portmap"}
	if err := home.Up(ctx, authKey(t, coord, false), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := home.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.PortMap != nil {
		t.Errorf("status shows a port mapping with --no-portmap: %+v", st.Self.PortMap)
	}
	text, err := home.Host.Run(ctx, coord.Bins.Agent, "status", "--socket", home.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "portmap: off") {
		t.Errorf("`meshvpn status` does not say the port mapping is off:\n%s", text)
	}
	rules, err := upnpd.Redirects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 0 {
		t.Errorf("router redirects %v for an agent run with --no-portmap", rules)
	}
	if strings.Contains(upnpd.Proc.Log(), "10.1.0.11") {
		t.Errorf("miniupnpd heard from the host although port mapping is off")
	}
}

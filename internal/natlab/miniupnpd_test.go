package natlab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/portmap"
)

// portmapTool probes the gateway and maps a UDP port with the portmap
// package, prints the probe, the mapping and the errors as one JSON line
// ("RESULT {...}"), then deletes the mapping. It runs inside a lab host.
func portmapTool(args []string) error {
	fs := flag.NewFlagSet("portmap", flag.ContinueOnError)
	disable := fs.String("disable", "", "comma-separated protocols to leave out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cfg portmap.Config
	for _, p := range strings.Split(*disable, ",") {
		if p != "" {
			cfg.Disable = append(cfg.Disable, portmap.Protocol(p))
		}
	}
	out := map[string]any{}
	res, err := portmap.Probe(ctx, cfg)
	out["probe"], out["probe_err"] = res, fmt.Sprint(err)
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	cl := portmap.NewClient(cfg)
	m, err := cl.Map(ctx, uint16(c.LocalAddr().(*net.UDPAddr).Port))
	out["mapping"], out["map_err"] = m, fmt.Sprint(err)
	if err == nil {
		r, err := cl.Renew(ctx)
		out["renewed"], out["renew_err"] = r, fmt.Sprint(err)
	}
	out["close_err"] = fmt.Sprint(cl.Close())
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT %s\n", b)
	return nil
}

// TestMiniUPnPd runs real miniupnpd on a symmetric-NAT router in each mode
// and maps a port through it with the portmap package.
func TestMiniUPnPd(t *testing.T) {
	Require(t)
	for _, mode := range []UPnPMode{UPnPAndPMP, PMPOnly, UPnPOnly} {
		t.Run(mode.String(), func(t *testing.T) {
			lab, err := New(t)
			if err != nil {
				t.Fatal(err)
			}
			stun, err := lab.AddCoturnSTUN("stun", "203.0.113.3", "203.0.113.4")
			if err != nil {
				t.Fatal(err)
			}
			site, err := lab.AddSite("home", Symmetric)
			if err != nil {
				t.Fatal(err)
			}
			mu, err := site.StartMiniUPnPd(t.Context(), stun, mode)
			if err != nil {
				t.Fatal(err)
			}
			res := runPortmapHelper(t, site.Host, "")
			wantPMP := mode != UPnPOnly
			if res.Probe.NATPMP != wantPMP || res.Probe.PCP != (mode == UPnPAndPMP) || res.Probe.UPnP != (mode != PMPOnly) {
				t.Errorf("probe %+v does not match mode %v", res.Probe, mode)
			}
			if res.Mapping.External.Addr() != site.Router.IP {
				t.Errorf("mapping %+v (%s), want external address %v", res.Mapping, res.MapErr, site.Router.IP)
			}
			// Each protocol on its own, where the mode offers it.
			for _, only := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
				if (only != portmap.NATPMP && mode == PMPOnly) || (only != portmap.UPnP && mode == UPnPOnly) {
					continue
				}
				var others []string
				for _, p := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
					if p != only {
						others = append(others, string(p))
					}
				}
				res := runPortmapHelper(t, site.Host, strings.Join(others, ","))
				if res.Mapping.Protocol != only || res.Mapping.External.Addr() != site.Router.IP || res.CloseErr != "<nil>" {
					t.Errorf("%s alone: mapping %+v (%s), close: %s", only, res.Mapping, res.MapErr, res.CloseErr)
				}
				// A renewal keeps the external port.
				if res.Renewed.External != res.Mapping.External || !res.Renewed.Obtained.After(res.Mapping.Obtained) {
					t.Errorf("%s alone: renewed %+v (%s), was %+v", only, res.Renewed, res.RenewErr, res.Mapping)
				}
			}
			rules, err := mu.Redirects(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != 0 {
				t.Errorf("redirects left after Close: %v", rules)
			}
		})
	}
}

type helperResult struct {
	Probe    portmap.ProbeResult
	Mapping  portmap.Mapping
	MapErr   string `json:"map_err"`
	Renewed  portmap.Mapping
	RenewErr string `json:"renew_err"`
	CloseErr string `json:"close_err"`
}

// runPortmapHelper runs portmapTool on h with the given protocols disabled.
func runPortmapHelper(t *testing.T, h *Host, disable string) helperResult {
	t.Helper()
	out, err := h.Run(t.Context(), "env", "NATLAB_UDPTOOL=1", os.Args[0], "--", "portmap", "-disable", disable)
	t.Logf("portmap tool (disabled: %q): %s", disable, out)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(out, "RESULT ")
	if i < 0 {
		t.Fatal("no result")
	}
	var res helperResult
	if err := json.Unmarshal([]byte(strings.SplitN(out[i+7:], "\n", 2)[0]), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/netcheck"
)

// stunList collects --stun flags; each may hold several comma-separated
// servers.
type stunList []string

func (l *stunList) String() string { return strings.Join(*l, ",") }

func (l *stunList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func cmdNetcheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("netcheck", "netcheck [--json] [--coordinator URL] [--ca-file FILE] [--stun HOST:PORT or [IPV6]:PORT] [--timeout DUR]", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	coord := fs.String("coordinator", os.Getenv("MESHVPN_COORDINATOR"), "coordinator URL to ask for its STUN servers (env MESHVPN_COORDINATOR)")
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed the coordinator's TLS certificate (default: system roots)")
	var stuns stunList
	fs.Var(&stuns, "stun", "STUN server `host:port` to test against, repeatable; used after the coordinator's servers, or alone without --coordinator")
	timeout := fs.Duration("timeout", 15*time.Second, "give up on the whole check after this long")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q", pos[0])
	}
	if *timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	// MESHVPN_COORDINATOR may list several coordinators of one mesh (see
	// up): any one will do for its STUN servers.
	*coord, _, _ = strings.Cut(*coord, ",")
	*coord = strings.TrimSpace(*coord)
	if *coord == "" && len(stuns) == 0 {
		return errors.New("--coordinator URL (or $MESHVPN_COORDINATOR) or --stun HOST:PORT is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	cfg := netcheck.Config{
		Logger:       slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		PortMapProbe: netcheck.PortMapProbe,
	}
	if *coord != "" {
		info, err := netcheck.FetchInfo(ctx, *coord, *caFile)
		if err != nil {
			return err
		}
		if len(info.STUN) == 0 && len(info.STUN6) == 0 && len(stuns) == 0 {
			return fmt.Errorf("coordinator %s serves no STUN (started with an empty --stun-listen?); give STUN servers with --stun", *coord)
		}
		cfg.STUN, cfg.STUN6, cfg.TURN = info.STUN, info.STUN6, info.TURN
	}
	for _, s := range stuns {
		cfg.STUN = append(cfg.STUN, control.STUNServer{Addr: s})
	}
	rep, err := netcheck.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printNetcheck(stdout, rep)
	return nil
}

// natWords explains each NAT type in a sentence.
var natWords = map[string]string{
	netcheck.NATNone:           "no NAT: this host has a public address",
	netcheck.NATFullCone:       "full cone: one public port for every destination, and anyone may send to it",
	netcheck.NATRestricted:     "restricted cone: one public port for every destination; replies come in from any port of an address you sent to",
	netcheck.NATPortRestricted: "port-restricted cone: one public port for every destination; replies come in only from the address and port you sent to",
	netcheck.NATSymmetric:      "symmetric: a new public port for each destination; direct paths to peers behind port-restricted or symmetric NATs need a relay (or a port mapping)",
	netcheck.NATUDPBlocked:     "UDP blocked",
	netcheck.NATUnknown:        "unknown",
}

func printNetcheck(w io.Writer, r *netcheck.Report) {
	yesNo := map[bool]string{true: "yes", false: "no"}
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-31s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	if r.IPv4Unavailable != "" {
		line("IPv4", "unavailable: %s", r.IPv4Unavailable)
	}
	line("UDP", "%s", yesNo[r.UDP])
	if r.PublicEndpoint != "" {
		line("Public IPv4 endpoint", "%s (local UDP port %d)", r.PublicEndpoint, r.LocalPort)
	} else {
		line("Public IPv4 endpoint", "unknown")
	}
	varies := "not tested"
	if v := r.MappingVariesByDestination; v != nil {
		varies = yesNo[*v]
	}
	line("Mapping varies by destination", "%s (%s mapping)", varies, r.Mapping)
	line("Filtering", "%s", filteringWords[r.Filtering])
	line("NAT type", "%s", natWords[r.NATType])
	if r.Reason != "" {
		line("  why", "%s", r.Reason)
	}
	printIPv6(line, r.IPv6)
	switch pm := r.PortMapping; {
	case !pm.Probed:
		line("Port mapping", "not probed")
	case pm.Error != "":
		line("Port mapping", "probe failed: %s", pm.Error)
	default:
		line("Port mapping", "UPnP %s, NAT-PMP %s, PCP %s", yesNo[pm.UPnP], yesNo[pm.NATPMP], yesNo[pm.PCP])
		if pm.External != "" {
			line("  mapped", "%s via %s", pm.External, pm.Protocol)
		}
	}
	fmt.Fprintln(w, "Latency:")
	for _, s := range r.Servers {
		lat := "no answer"
		if s.LatencyMs != nil {
			lat = fmt.Sprintf("%.1f ms", *s.LatencyMs)
		}
		if s.Error != "" && s.LatencyMs != nil {
			lat += " (" + s.Error + ")"
		} else if s.Error != "" {
			lat = s.Error
		}
		fmt.Fprintf(w, "  %-14s %-24s %s\n", s.Kind, s.Addr, lat)
	}
}

// printIPv6 writes the IPv6 lines of the report.
func printIPv6(line func(label, format string, args ...any), v6 netcheck.IPv6Report) {
	switch {
	case !v6.Tested:
		line("IPv6", "not tested: %s", v6.Reason)
	case !v6.UDP:
		line("IPv6", "no: %s", v6.Reason)
	default:
		nat := "a global address, no NAT"
		if v6.Translated {
			nat = "translated: not one of this host's addresses"
		}
		line("IPv6", "yes")
		line("Public IPv6 endpoint", "%s (local UDP port %d; %s)", v6.PublicEndpoint, v6.LocalPort, nat)
	}
}

// filteringWords says what each filtering behaviour lets in.
var filteringWords = map[string]string{
	netcheck.EndpointIndependent: "endpoint-independent (anyone may send to the public port)",
	netcheck.AddressDependent:    "address-dependent (replies from any port of an address you sent to)",
	netcheck.AddrPortDependent:   "address-and-port-dependent (replies only from the address and port you sent to)",
	netcheck.Unknown:             "unknown",
}

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
	fs := newFlags("netcheck", "netcheck [--json] [--coordinator URL] [--ca-file FILE] [--stun HOST:PORT] [--timeout DUR]", stderr)
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
	if *coord == "" && len(stuns) == 0 {
		return errors.New("--coordinator URL (or $MESHVPN_COORDINATOR) or --stun HOST:PORT is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	cfg := netcheck.Config{
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// PortMapProbe: wired to portmap once that package lands.
	}
	if *coord != "" {
		info, err := netcheck.FetchInfo(ctx, *coord, *caFile)
		if err != nil {
			return err
		}
		if len(info.STUN) == 0 && len(stuns) == 0 {
			return fmt.Errorf("coordinator %s serves no STUN (started with an empty --stun-listen?); give STUN servers with --stun", *coord)
		}
		cfg.STUN, cfg.TURN = info.STUN, info.TURN
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
	netcheck.NATUDPBlocked:     "UDP blocked: no STUN server answered over UDP",
	netcheck.NATUnknown:        "unknown",
}

func printNetcheck(w io.Writer, r *netcheck.Report) {
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(w, "UDP:                  %s\n", yesNo[r.UDP])
	if r.PublicEndpoint != "" {
		fmt.Fprintf(w, "Public IPv4 endpoint: %s (local UDP port %d)\n", r.PublicEndpoint, r.LocalPort)
	} else {
		fmt.Fprintln(w, "Public IPv4 endpoint: unknown")
	}
	varies := "not tested"
	if v := r.MappingVariesByDestination; v != nil {
		varies = yesNo[*v]
	}
	fmt.Fprintf(w, "Mapping varies by destination: %s (mapping %s)\n", varies, r.Mapping)
	fmt.Fprintf(w, "Filtering:            %s\n", r.Filtering)
	fmt.Fprintf(w, "NAT type:             %s\n", natWords[r.NATType])
	if r.Reason != "" {
		fmt.Fprintf(w, "  why: %s\n", r.Reason)
	}
	switch pm := r.PortMapping; {
	case !pm.Probed:
		fmt.Fprintln(w, "Port mapping:         not probed")
	case pm.Error != "":
		fmt.Fprintf(w, "Port mapping:         probe failed: %s\n", pm.Error)
	default:
		fmt.Fprintf(w, "Port mapping:         UPnP %s, NAT-PMP %s, PCP %s\n", yesNo[pm.UPnP], yesNo[pm.NATPMP], yesNo[pm.PCP])
		if pm.External != "" {
			fmt.Fprintf(w, "  mapped %s via %s\n", pm.External, pm.Protocol)
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

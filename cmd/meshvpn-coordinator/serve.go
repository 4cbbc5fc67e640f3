package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/lograte"
	"github.com/meshvpn/meshvpn/internal/secretflag"
)

const serveAbout = `Runs the coordinator until SIGINT or SIGTERM: the HTTP(S) API that admits
nodes (POST /api/v1/register), the WebSocket stream that sends each agent its
netmap and relays ICE signalling (GET /api/v1/stream), an embedded STUN
server and an embedded TURN relay (UDP and TCP on --turn-listen, TLS on
--turns-listen). Agents get short-lived TURN credentials (TURN REST API
scheme), renewed before they expire; external TURN servers such as coturn
with use-auth-secret can be added with --turn-url and --turn-secret-file.
The API speaks HTTPS when both --tls-cert and --tls-key are given, plain
HTTP otherwise. State (auth keys, nodes, the coordinator's own X25519 key
coordinator.key that nodes prove possession of their WireGuard keys against)
lives in --state. With --store (or --store-file, MESHVPN_STORE) it lives in
PostgreSQL instead, the coordinator key and TURN secret included; --state
then keeps only the lock and the admin socket.

With --stun-alt-listen the STUN server also answers RFC 5780 CHANGE-REQUEST
from its second address, and GET /api/v1/netcheck-info (no credential) tells
'meshvpn netcheck' both addresses.

Dual stack: --listen :PORT, --stun-listen :PORT (or [::]:PORT) and
--turn-listen [::]:PORT take both IPv4 and IPv6. --public-ipv6 names the IPv6
address agents and netcheck are told to reach STUN at (stun6 in the netmap
and netcheck-info).

Admin commands that change nodes reach the running server through the unix
socket admin.sock in --state (mode 0600).`

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg coordinator.Config
	fs.StringVar(&cfg.Listen, "listen", ":8080", "TCP `address` of the API")
	fs.StringVar(&cfg.StateDir, "state", defaultStateDir, "state `directory` (created with mode 0700)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate `file` (with --tls-key: serve HTTPS)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key `file` (with --tls-cert: serve HTTPS)")
	fs.StringVar(&cfg.STUNListen, "stun-listen", ":3478", "UDP `address`es of the STUN server, comma-separated; empty disables STUN. :PORT or [::]:PORT takes IPv4 and IPv6; the first address is the one --stun-alt-listen pairs with, the others (e.g. [2001:db8::10]:3478) answer plain Binding requests")
	// netcheck: the second STUN address for NAT-type tests.
	fs.StringVar(&cfg.STUNAltListen, "stun-alt-listen", "", "second UDP `address` of the STUN server for `meshvpn netcheck`'s NAT tests: another IP (e.g. 203.0.113.11:3479; then --stun-listen needs a specific IP too), or only another port (e.g. :3479); empty disables it")
	fs.StringVar(&cfg.PublicHost, "public-host", "", "`host` agents are told to reach STUN at (default: the host each agent used to reach the API)")
	fs.StringVar(&cfg.PublicIPv6, "public-ipv6", "", "IPv6 `address` of this server that agents and netcheck are also told to reach STUN at (e.g. 2001:db8::10); --stun-listen must then take IPv6 (the default :3478 takes both families)")
	storeName := storeFlags(fs)
	turnCfg := turnFlags(fs)
	fs.DurationVar(&cfg.EphemeralTimeout, "ephemeral-timeout", 5*time.Minute, "how long a node of an --ephemeral auth key may be offline before it is removed (`duration`)")
	fs.DurationVar(&cfg.EphemeralGrace, "ephemeral-grace", 10*time.Minute, "time an ephemeral node gets to open its first stream after registering, or to reconnect after a coordinator restart (`duration`)")
	fs.IntVar(&cfg.AuthFailBurst, "auth-fail-burst", 20, "`n` failed auth attempts (bad auth key or credential) allowed from one source IP before it gets 429; -1 disables the limit")
	fs.Float64Var(&cfg.AuthFailPerMinute, "auth-fail-per-minute", 30, "rate at which a source IP's failed-attempt budget refills (`n` per minute)")
	fs.DurationVar(&cfg.IPHoldback, "ip-holdback", coordinator.DefaultIPHoldback, "how long a removed node's overlay address is held back before another node gets it, so peers' address-based rules do not pass to a stranger (`duration`; 0 reuses at once)")
	fs.IntVar(&cfg.JoinBurst, "join-burst", 100, "`n` registrations with one auth key allowed at once before further ones get 429; -1 disables the limit (rejoining with a credential is never limited)")
	fs.Float64Var(&cfg.JoinPerMinute, "join-per-minute", 600, "rate at which an auth key's join budget refills (`n` per minute)")
	fs.IntVar(&cfg.MaxConnsPerSource, "max-conns-per-ip", 256, "API connections open at once from one source IP (IPv6: one /64); more are closed at once. Agents behind one NAT address each hold one; -1 disables the cap (`n`)")
	fs.StringVar(&cfg.DNSDomain, "dns-domain", control.DefaultDNSDomain, "DNS `domain` of the mesh: every node is NAME.DOMAIN on the agents' resolver (100.100.100.100)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "TCP `address` of the Prometheus endpoint (plain HTTP, path /metrics), e.g. 127.0.0.1:9100; empty (the default) disables it")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	if err := parseFlags(fs, serveAbout, args, stdout, stderr); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator serve: bad --log-level %q: want debug, info, warn or error\n", *level)
		return errUsage
	}
	if cfg.EphemeralTimeout <= 0 || cfg.EphemeralGrace <= 0 || cfg.AuthFailPerMinute <= 0 || cfg.AuthFailBurst == 0 || cfg.AuthFailBurst < -1 {
		fmt.Fprintln(stderr, "meshvpn-coordinator serve: --ephemeral-timeout, --ephemeral-grace and --auth-fail-per-minute must be positive, --auth-fail-burst positive or -1")
		return errUsage
	}
	if cfg.JoinBurst == 0 || cfg.JoinBurst < -1 || cfg.JoinPerMinute <= 0 {
		fmt.Fprintln(stderr, "meshvpn-coordinator serve: --join-burst must be positive or -1, --join-per-minute positive")
		return errUsage
	}
	if cfg.MaxConnsPerSource == 0 || cfg.MaxConnsPerSource < -1 {
		fmt.Fprintln(stderr, "meshvpn-coordinator serve: --max-conns-per-ip must be positive or -1")
		return errUsage
	}
	switch {
	case cfg.IPHoldback < 0:
		fmt.Fprintln(stderr, "meshvpn-coordinator serve: --ip-holdback must not be negative")
		return errUsage
	case cfg.IPHoldback == 0:
		cfg.IPHoldback = -1 // Config's "none"; its 0 means the default
	}
	domain, err := control.NormalizeDNSDomain(cfg.DNSDomain)
	if err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator serve: --dns-domain: %v\n", err)
		return errUsage
	}
	cfg.DNSDomain = domain
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		fmt.Fprintln(stderr, "meshvpn-coordinator serve: --tls-cert and --tls-key must be given together")
		return errUsage
	}
	if cfg.Store, err = storeName(); err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator serve: %v\n", err)
		return errUsage
	}
	if cfg.TURN, err = turnCfg(); err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator serve: %v\n", err)
		return errUsage
	}
	// Repeated lines are rate-limited: a stranger knocking again and again
	// must not fill the disk.
	cfg.Logger = slog.New(lograte.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}), lograte.Options{}))
	secretflag.Warn(fs, cfg.Logger, turnSecretSrc, turnPasswordSrc)
	if coordinator.StoreHasPassword(fs.Lookup("store").Value.String()) {
		secretflag.Warn(fs, cfg.Logger, storeSrc)
	}

	srv, err := coordinator.New(cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cfg.Logger.Info("stopped")
	return nil
}

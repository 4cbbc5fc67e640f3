package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/secretflag"
)

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// The relay secrets serve takes, each from a flag (visible in ps: serve
// warns), a file or an environment variable.
var (
	turnSecretSrc   = secretflag.Secret{Flag: "turn-secret", FileFlag: "turn-secret-file", Env: "MESHVPN_TURN_SECRET"}
	turnPasswordSrc = secretflag.Secret{Flag: "turn-password", FileFlag: "turn-password-file", Env: "MESHVPN_TURN_PASSWORD"}
)

// turnFlags registers the relay flags of serve; the returned function
// checks them once parsed.
func turnFlags(fs *flag.FlagSet) func() (coordinator.TURNConfig, error) {
	var cfg coordinator.TURNConfig
	var urls, allow listFlag
	fs.BoolVar(&cfg.Embedded, "embedded-turn", true, "run the embedded TURN relay (set =false to use only --turn-url servers)")
	fs.StringVar(&cfg.Listen, "turn-listen", ":3478", "UDP and TCP `address` of the embedded TURN server (it answers STUN too when equal to --stun-listen)")
	fs.StringVar(&cfg.TLSListen, "turns-listen", "", "TLS `address` of the embedded TURN server, e.g. :443 (needs --tls-cert/--tls-key)")
	fs.StringVar(&cfg.PublicIP, "turn-public-ip", "", "public IPv4 `address` relayed traffic appears from, for a server behind 1:1 NAT (default: --public-host if an IP, else the first global address)")
	rng := fs.String("relay-range", "49152-65535", "UDP `ports` MIN-MAX the embedded TURN server relays from")
	fs.Var(&allow, "turn-allow-peer", "`CIDR` the embedded relay may reach although it is private or loopback (repeatable; by default those are refused)")
	fs.DurationVar(&cfg.CredentialTTL, "turn-credential-ttl", 12*time.Hour, "lifetime of the TURN credentials given to agents (renewed at half-life)")
	fs.DurationVar(&cfg.AllocationLifetime, "turn-allocation-lifetime", 2*time.Minute, "longest an embedded relay allocation over UDP lives without a refresh (agents refresh at half of it)")
	fs.Var(&urls, "turn-url", "external TURN server `URI`, e.g. turn:turn.example.com:3478?transport=udp or turns:turn.example.com:443?transport=tcp (repeatable)")
	secret := fs.String("turn-secret", "", "`secret` shared with the external TURN servers (coturn static-auth-secret). Visible in ps: prefer --turn-secret-file or the environment variable MESHVPN_TURN_SECRET")
	secretFile := fs.String("turn-secret-file", "", "`file` holding the external TURN servers' shared secret")
	fs.StringVar(&cfg.Username, "turn-username", "", "static `username` for the external TURN servers (instead of a secret; every agent gets it)")
	password := fs.String("turn-password", "", "static `password` for the external TURN servers. Visible in ps: prefer --turn-password-file or the environment variable MESHVPN_TURN_PASSWORD")
	passwordFile := fs.String("turn-password-file", "", "`file` holding the static password for the external TURN servers")
	fs.StringVar(&cfg.CAFile, "turn-ca", "", "PEM `file` of the CA that turns: servers' certificates chain to, handed to agents")
	return func() (coordinator.TURNConfig, error) {
		cfg.URLs = urls
		lo, hi, ok := strings.Cut(*rng, "-")
		minP, err1 := strconv.ParseUint(lo, 10, 16)
		maxP, err2 := strconv.ParseUint(hi, 10, 16)
		if !ok || err1 != nil || err2 != nil || minP == 0 || maxP < minP {
			return cfg, fmt.Errorf("bad --relay-range %q: want MIN-MAX, e.g. 49152-65535", *rng)
		}
		cfg.MinPort, cfg.MaxPort = uint16(minP), uint16(maxP)
		if cfg.AllocationLifetime < 10*time.Second || cfg.AllocationLifetime > time.Hour {
			return cfg, fmt.Errorf("bad --turn-allocation-lifetime %s: want 10s to 1h", cfg.AllocationLifetime)
		}
		for _, a := range allow {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return cfg, fmt.Errorf("bad --turn-allow-peer %q: want a CIDR such as 10.0.0.0/8", a)
			}
			cfg.AllowPeers = append(cfg.AllowPeers, p.Masked())
		}
		var err error
		if cfg.Secret, err = turnSecretSrc.Value(fs, *secret, *secretFile); err != nil {
			return cfg, err
		}
		if cfg.Password, err = turnPasswordSrc.Value(fs, *password, *passwordFile); err != nil {
			return cfg, err
		}
		if cfg.Secret != "" && (cfg.Username != "" || cfg.Password != "") {
			return cfg, errors.New("give --turn-secret or --turn-username/--turn-password, not both")
		}
		if (cfg.Username == "") != (cfg.Password == "") {
			return cfg, errors.New("--turn-username and --turn-password go together")
		}
		if len(urls) > 0 && cfg.Secret == "" && cfg.Username == "" {
			return cfg, errors.New("--turn-url needs --turn-secret(-file) or --turn-username/--turn-password")
		}
		if len(urls) == 0 && (cfg.Secret != "" || cfg.Username != "") {
			return cfg, errors.New("TURN credentials given without --turn-url")
		}
		return cfg, nil
	}
}

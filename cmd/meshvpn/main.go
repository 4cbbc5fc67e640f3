// Command meshvpn is the meshvpn agent (`meshvpn up`) and the client
// commands that talk to a running agent.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshvpn/meshvpn/agent"
	"github.com/meshvpn/meshvpn/internal/lograte"
	"github.com/meshvpn/meshvpn/internal/secretflag"
	"github.com/meshvpn/meshvpn/tun"
)

const defaultSocket = "/run/meshvpn/meshvpn.sock"

const usage = `meshvpn: peer-to-peer mesh VPN agent

Usage:
  meshvpn up --coordinator URL [--authkey KEY] [flags]   run the agent (foreground)
  meshvpn status [--json] [--socket PATH]                 show this node and the path to every peer
  meshvpn ping PEER [-6] [-c N] [--json] [--socket PATH]  ping a peer (name, IPv4 or IPv6 overlay address),
                                                          showing the path
  meshvpn down [--socket PATH]                            stop the running agent (as SIGTERM does)
  meshvpn netcheck [--json] [--coordinator URL]           what this network does to UDP: NAT type, public
                                                          address, latency (no running agent needed)
  meshvpn version                                         print the version

Run 'meshvpn COMMAND --help' for the flags of a command.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "up":
		err = cmdUp(args[1:], stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "ping":
		err = cmdPing(args[1:], stdout, stderr)
	case "down":
		err = cmdDown(args[1:], stderr)
	case "netcheck":
		err = cmdNetcheck(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "meshvpn", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "meshvpn: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshvpn %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: meshvpn %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse accepts flags before and after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func cmdUp(args []string, stderr io.Writer) error {
	fs := newFlags("up", "up --coordinator URL [--authkey KEY] [flags]", stderr)
	// A list, not a string: several coordinators of one mesh to fail over
	// between (see agent/coordinators.go).
	var coords stunList
	fs.Var(&coords, "coordinator", "coordinator `URL`, e.g. https://coord.example.com:8080; repeatable or comma-separated to fail over between coordinators of one mesh, tried in order (env MESHVPN_COORDINATOR)")
	authKey := fs.String("authkey", "", "auth key from `meshvpn-coordinator authkey create`; needed on the first start only. Visible in ps: prefer --authkey-file or the environment variable MESHVPN_AUTHKEY")
	authKeyFile := fs.String("authkey-file", "", "read the auth key from this `file` (keep it mode 0600)")
	hostname := fs.String("hostname", "", "name of this node in the mesh (default: the OS hostname)")
	stateDir := fs.String("state-dir", "/var/lib/meshvpn", "directory for the private key and node credential (mode 0700)")
	socket := fs.String("socket", defaultSocket, "unix socket of the local API used by status and ping")
	tunName := fs.String("tun", "meshvpn0", "name of the TUN device")
	port := fs.Uint("port", 0, "UDP port shared by WireGuard and ICE (0 = random)")
	mtu := fs.Int("mtu", tun.DefaultMTU, "MTU of the TUN device")
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed the coordinator's TLS certificate (default: system roots)")
	noPortmap := fs.Bool("no-portmap", false, "do not ask the router (PCP, NAT-PMP or UPnP) to forward the UDP port")
	acceptDNS := fs.Bool("accept-dns", true, "point this host's DNS at the mesh resolver 100.100.100.100 (systemd-resolved per link, else /etc/resolv.conf rewritten while the agent runs); --accept-dns=false leaves the host's DNS alone, the resolver still answers")
	metricsListen := fs.String("metrics-listen", "", "TCP address of the Prometheus endpoint (plain HTTP, path /metrics), e.g. 127.0.0.1:9101; empty (the default) disables it")
	relayServer := fs.Bool("relay-server", false, "offer this node as a relay (TURN) to the mesh; it needs an address the other nodes reach (a public IP, a full-cone NAT or a port mapping of the listen port and the relay ports)")
	relayListen := fs.String("relay-listen", ":3478", "UDP and TCP `address` of the relay server (with --relay-server)")
	relayPublic := fs.String("relay-public", "", "IPv4:port where other nodes reach the relay server (default: this host's first global IPv4 and the --relay-listen port)")
	lazyPeers := fs.String("lazy-peers", agent.LazyAuto, fmt.Sprintf("set a peer's path up only when a packet is addressed to it, it signals, or ping / status --peer asks: on, off, or auto (on with more than %d peers)", agent.LazyAutoPeers))
	lazyIdle := fs.Duration("lazy-idle", agent.DefaultLazyIdle, "with paths on demand, tear down a path that carried no packet for this long")
	relayClient := fs.String("relay-client", relayClientDefault(), "how relayed paths use the relay: shared (one allocation per agent, a channel per peer, over UDP, TCP or TLS) or per-peer (a TURN allocation and ICE session per peer); the environment variable MESHVPN_RELAY_CLIENT sets the default")
	verbose := fs.Bool("verbose", false, "log debug details")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q", pos[0])
	}
	if _, err := agent.ParseLazyMode(*lazyPeers); err != nil {
		return err
	}
	if *lazyIdle < time.Second {
		return fmt.Errorf("--lazy-idle %v: want at least 1s", *lazyIdle)
	}
	if len(coords) == 0 {
		coords.Set(os.Getenv("MESHVPN_COORDINATOR"))
	}
	if *port > 65535 {
		return fmt.Errorf("--port %d is not a UDP port", *port)
	}
	if *mtu < 1280 || *mtu > 9000 {
		return fmt.Errorf("--mtu %d out of range 1280-9000", *mtu)
	}
	if *relayClient != agent.RelayClientPerPeer && *relayClient != agent.RelayClientShared {
		return errors.New("--relay-client: want per-peer or shared")
	}
	var rs agent.RelayServerConfig
	if *relayServer {
		rs = agent.RelayServerConfig{Listen: *relayListen, Public: *relayPublic}
	} else if *relayPublic != "" {
		return errors.New("--relay-public needs --relay-server")
	}
	authSecret := secretflag.Secret{Flag: "authkey", FileFlag: "authkey-file", Env: "MESHVPN_AUTHKEY"}
	key, err := authSecret.Value(fs, *authKey, *authKeyFile)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	// Repeated lines are rate-limited: a flapping peer or a failing relay
	// must not fill the disk.
	log := slog.New(lograte.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}), lograte.Options{}))
	secretflag.Warn(fs, log, authSecret)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return agent.Run(ctx, agent.Config{
		Coordinators:  coords,
		AuthKey:       key,
		Hostname:      *hostname,
		StateDir:      *stateDir,
		Socket:        *socket,
		TUN:           *tunName,
		Port:          uint16(*port),
		MTU:           *mtu,
		CAFile:        *caFile,
		NoPortmap:     *noPortmap,
		AcceptDNS:     *acceptDNS,
		MetricsListen: *metricsListen,
		RelayServer:   rs,
		LazyPeers:     *lazyPeers,
		LazyIdle:      *lazyIdle,
		RelayClient:   *relayClient,
		Logger:        log,
	})
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [--json] [--peer PEER] [--socket PATH]", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	socket := fs.String("socket", defaultSocket, "unix socket of the agent")
	peer := fs.String("peer", "", "show only this peer (name or overlay IP), and set its path up if it is set up on demand")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := (&agent.Client{Socket: *socket}).StatusPeer(ctx, *peer)
	if err != nil {
		return err
	}
	if *peer != "" {
		p, err := agent.ResolvePeer(st, *peer)
		if err != nil {
			return err
		}
		st.Peers = []agent.PeerStatus{*p}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st *agent.Status) {
	self := st.Self.IP
	if st.Self.IP6 != "" {
		self += " " + st.Self.IP6
	}
	fmt.Fprintf(w, "self: %s %s  (UDP port %d, TUN %s)\n", st.Self.Name, self, st.Self.ListenPort, st.Self.TUN)
	if len(st.Self.Tags) > 0 {
		fmt.Fprintf(w, "  tags %s\n", strings.Join(st.Self.Tags, ","))
	}
	for _, e := range st.Self.Endpoints {
		fmt.Fprintf(w, "  endpoint %-22s %s\n", e.Addr, e.Type)
	}
	printPortMap(w, st.Self.PortMap)
	if st.Self.NAT != "" {
		fmt.Fprintf(w, "  network: %s\n", st.Self.NAT)
	}
	for _, r := range st.Self.Relays {
		state := fmt.Sprintf("available, %.1fms", r.RTTMs)
		if !r.Available {
			state = "UNAVAILABLE: " + r.Error
		}
		if r.Chosen {
			state += ", chosen"
		}
		fmt.Fprintf(w, "  relay %-25s %-3s %s%s\n", r.Server, r.Transport, state, relayOwner(st, r.Node))
	}
	if d := st.Self.DNS; d != nil {
		fmt.Fprintf(w, "  dns: %s on %s, host DNS %s\n", d.Domain, dash(d.Resolver), dnsModeText(d.Mode))
	}
	coord := "connected"
	if !st.Coordinator.Connected {
		coord = "DISCONNECTED"
		if st.Coordinator.LastError != "" {
			coord += " (" + st.Coordinator.LastError + ")"
		}
	}
	fmt.Fprintf(w, "coordinator: %s %s\n\n", st.Coordinator.URL, coord)
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "no peers")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tDNS NAME\tIP\tIPV6\tTAGS\tONLINE\tPATH\tENDPOINT\tCANDIDATES\tHANDSHAKE\tRX\tTX\tRTT\tPOLICY")
	for _, p := range st.Peers {
		path := p.Path
		if p.Relay != nil {
			path += " via " + p.Relay.Server + " " + p.Relay.Transport + relayOwner(st, p.Relay.Node)
		}
		if p.Reason != "" {
			path += " (" + p.Reason + ")"
		}
		if p.Punch != "" {
			path += " [" + p.Punch + "]"
		}
		cands := "-"
		if p.LocalType != "" {
			cands = p.LocalType + "→" + p.RemoteType
		}
		if p.Family != "" {
			cands += " " + p.Family
		}
		hs := "never"
		if t, err := time.Parse(time.RFC3339, p.LastHandshake); err == nil {
			hs = time.Since(t).Round(time.Second).String() + " ago"
		}
		rtt := "-"
		if p.RTTMs > 0 {
			rtt = fmt.Sprintf("%.1fms", p.RTTMs)
		}
		pol := dash(p.Policy)
		if p.PolicyDropsIn+p.PolicyDropsOut > 0 {
			pol += fmt.Sprintf(" (dropped %d in, %d out)", p.PolicyDropsIn, p.PolicyDropsOut)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, dash(p.DNSName), p.IP, dash(p.IP6), dash(strings.Join(p.Tags, ",")), p.Online, path, dash(p.Endpoint), cands, hs,
			bytesStr(p.RxBytes), bytesStr(p.TxBytes), rtt, pol)
	}
	tw.Flush()
}

func dnsModeText(mode string) string {
	switch mode {
	case "resolved":
		return "resolved (systemd-resolved sends the mesh domain here)"
	case "resolv.conf":
		return "resolv.conf (rewritten while the agent runs)"
	case "off":
		return "off (host DNS not changed)"
	}
	return mode
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesStr(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func cmdPing(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ping", "ping PEER [-6] [-c N] [--until-direct] [--json] [--socket PATH]", stderr)
	v6 := fs.Bool("6", false, "ping the peer's IPv6 overlay address (implied when PEER is an IPv6 address)")
	count := fs.Int("c", 0, "number of echo requests (default 4; with --until-direct, the most to send: default 30)")
	untilDirect := fs.Bool("until-direct", false, "keep pinging until a reply comes over a direct path (exit 1 if none does within -c pings)")
	interval := secondsFlag(fs, "i", time.Second, "interval between requests (seconds like ping's 0.2, or a duration like 200ms)")
	timeout := secondsFlag(fs, "W", 2*time.Second, "time to wait for each reply (seconds or a duration)")
	asJSON := fs.Bool("json", false, "print one JSON object per echo and a summary object")
	socket := fs.String("socket", defaultSocket, "unix socket of the agent")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	if *interval < 10*time.Millisecond || *timeout <= 0 {
		return errors.New("-i must be at least 10ms and -W positive")
	}
	if *count == 0 {
		*count = 4
		if *untilDirect {
			*count = 30
		}
	}
	if *count < 1 || *count > 100000 {
		return fmt.Errorf("-c %d out of range 1-100000", *count)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := agent.Ping(ctx, &agent.Client{Socket: *socket}, pos[0], agent.PingOptions{Count: *count, Interval: *interval, Timeout: *timeout, JSON: *asJSON, UntilDirect: *untilDirect, IPv6: *v6}, stdout)
	if err != nil {
		return err
	}
	if res.Received == 0 {
		return fmt.Errorf("no reply from %s", pos[0])
	}
	if *untilDirect && !res.Direct {
		return fmt.Errorf("no direct path to %s after %d pings", pos[0], res.Sent)
	}
	return nil
}

func cmdDown(args []string, stderr io.Writer) error {
	fs := newFlags("down", "down [--socket PATH]", stderr)
	socket := fs.String("socket", defaultSocket, "unix socket of the agent")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return (&agent.Client{Socket: *socket}).Down(ctx)
}

// seconds is a duration flag that also takes plain seconds ("0.2"), as
// ping users type them.
type seconds time.Duration

func secondsFlag(fs *flag.FlagSet, name string, def time.Duration, usage string) *time.Duration {
	d := def
	fs.Var((*seconds)(&d), name, usage)
	return &d
}

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s = seconds(time.Duration(f * float64(time.Second)))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want seconds (0.5) or a duration (500ms)")
	}
	*s = seconds(d)
	return nil
}

// relayOwner names the node running a peer relay, " (peer relay NAME)", or
// "" for the coordinator's relay and external servers.
func relayOwner(st *agent.Status, node uint64) string {
	if node == 0 {
		return ""
	}
	for _, p := range st.Peers {
		if p.ID == node {
			return " (peer relay " + p.Name + ")"
		}
	}
	return fmt.Sprintf(" (peer relay node %d)", node)
}

package meshlab

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// The coordinator's place in every lab.
const (
	CoordinatorIP  = "203.0.113.10"
	CoordinatorURL = "http://" + CoordinatorIP + ":8080"
	// CoordinatorAltSTUN is the STUN server's second address (another IP
	// and port), so that netcheck can ask for replies from elsewhere.
	CoordinatorAltIP   = "198.51.100.10"
	CoordinatorAltSTUN = CoordinatorAltIP + ":3479"
	// CoordinatorIPv6 is the coordinator's address in a dual-stack lab
	// (natlab gives a bridge host 2001:db8:: plus its IPv4 address).
	CoordinatorIPv6    = "2001:db8::cb00:710a"
	CoordinatorURLIPv6 = "http://[" + CoordinatorIPv6 + "]:8080"
)

// Coordinator is a running meshvpn-coordinator on a public lab host.
type Coordinator struct {
	Host     *natlab.Host
	Proc     *natlab.Proc
	StateDir string
	URL      string
	Bins     Bins
	// IPv6 is set in a dual-stack lab (CoordinatorOptions.IPv6).
	IPv6 bool
	// TLS is set when the coordinator serves HTTPS with a lab CA.
	TLS *TLSFiles
	// Args are extra flags for serve (relay settings).
	Args []string
	// Store is serve's --store (a PostgreSQL URL); empty: SQLite in
	// StateDir. The admin commands that open the store get it too.
	Store string
	// ip is the address serve listens on; CoordinatorIP unless moved by
	// RestartAt.
	ip string
	// altSTUN is the STUN server's alternate address.
	altSTUN string
}

// CoordinatorOptions adjust StartCoordinatorWith.
type CoordinatorOptions struct {
	// TLS serves HTTPS (and TURN over TLS on :443) with a lab CA.
	TLS bool
	// Args are extra flags for `meshvpn-coordinator serve`.
	Args []string
	// IPv6 makes the lab dual-stack (natlab's Lab.EnableIPv6: the
	// coordinator must then be the lab's first host) and serves the API
	// and STUN on CoordinatorIPv6 too, advertised with --public-ipv6.
	IPv6 bool
	// Store is serve's --store: a PostgreSQL URL the coordinator's host
	// reaches; empty keeps the SQLite default.
	Store string
	// Host, IP and AltIP place a further coordinator (a replica on the
	// same Store) on a host of its own; empty: "coord", CoordinatorIP and
	// CoordinatorAltIP.
	Host, IP, AltIP string
}

// StartCoordinatorWith is StartCoordinator with options.
func StartCoordinatorWith(ctx context.Context, lab *natlab.Lab, bins Bins, opt CoordinatorOptions) (*Coordinator, error) {
	return startCoordinator(ctx, lab, bins, opt)
}

// StartCoordinator adds the public host "coord" at CoordinatorIP, starts
// `meshvpn-coordinator serve` there (HTTP :8080, STUN :3478 and the
// alternate CoordinatorAltSTUN) and waits
// until its API accepts connections.
func StartCoordinator(ctx context.Context, lab *natlab.Lab, bins Bins) (*Coordinator, error) {
	return startCoordinator(ctx, lab, bins, CoordinatorOptions{})
}

// StartCoordinatorArgs returns a starter like StartCoordinator that passes
// extra flags to `serve` (e.g. "--ephemeral-timeout", "2s").
func StartCoordinatorArgs(extra ...string) func(context.Context, *natlab.Lab, Bins) (*Coordinator, error) {
	return func(ctx context.Context, lab *natlab.Lab, bins Bins) (*Coordinator, error) {
		return startCoordinator(ctx, lab, bins, CoordinatorOptions{Args: extra})
	}
}

// StartCoordinatorTLS is StartCoordinator with HTTPS, its certificate
// signed by a CA made for the lab; agents are given that CA.
func StartCoordinatorTLS(ctx context.Context, lab *natlab.Lab, bins Bins) (*Coordinator, error) {
	return startCoordinator(ctx, lab, bins, CoordinatorOptions{TLS: true})
}

func startCoordinator(ctx context.Context, lab *natlab.Lab, bins Bins, opt CoordinatorOptions) (*Coordinator, error) {
	withTLS := opt.TLS
	if opt.IPv6 && !lab.IPv6() {
		if err := lab.EnableIPv6(); err != nil {
			return nil, fmt.Errorf("meshlab: %w", err)
		}
	}
	name, ip, alt := cmp.Or(opt.Host, "coord"), cmp.Or(opt.IP, CoordinatorIP), cmp.Or(opt.AltIP, CoordinatorAltIP)
	h, err := lab.AddPublicHost(name, ip)
	if err != nil {
		return nil, err
	}
	if opt.IPv6 && h.IP6.String() != CoordinatorIPv6 {
		return nil, fmt.Errorf("meshlab: coordinator's IPv6 is %v, want %s", h.IP6, CoordinatorIPv6)
	}
	// /32: the whole 198.51.100.0/24 is already on-link (natlab).
	if err := h.AddAddr(alt + "/32"); err != nil {
		return nil, err
	}
	c := &Coordinator{Host: h, StateDir: filepath.Join(lab.Dir, name+"-state"), URL: "http://" + ip + ":8080", Bins: bins, Args: opt.Args, Store: opt.Store,
		ip: ip, altSTUN: alt + ":3479"}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, err
	}
	c.IPv6 = opt.IPv6
	if withTLS {
		files, err := writeLabTLS(lab.Dir, ip)
		if err != nil {
			return nil, err
		}
		c.TLS = &files
		c.URL = "https://" + ip + ":8080"
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Restart starts the coordinator again on the same state dir after it
// stopped or was killed.
func (c *Coordinator) Restart(ctx context.Context) error {
	if !c.Proc.Exited() {
		return fmt.Errorf("meshlab: coordinator still running")
	}
	return c.start(ctx)
}

// RestartAt starts the coordinator again on the same state dir, as
// Restart does, but listening on ip (an address of its host, see
// natlab.Host.AddAddr): a standby of the same mesh at another address.
// URL follows.
func (c *Coordinator) RestartAt(ctx context.Context, ip string) error {
	if !c.Proc.Exited() {
		return fmt.Errorf("meshlab: coordinator still running")
	}
	if c.TLS != nil {
		return fmt.Errorf("meshlab: RestartAt has no certificate for %s", ip)
	}
	c.ip = ip
	c.URL = "http://" + ip + ":8080"
	return c.start(ctx)
}

func (c *Coordinator) start(ctx context.Context) error {
	args := []string{"serve",
		"--listen", c.ip + ":8080",
		"--state", c.StateDir,
		"--stun-listen", c.ip + ":3478",
		"--stun-alt-listen", c.altSTUN,
		"--turn-listen", c.ip + ":3478",
		// Few relay ports: a lab run makes a handful of allocations.
		"--relay-range", "50000-50999"}
	if c.TLS != nil {
		args = append(args, "--tls-cert", c.TLS.Cert, "--tls-key", c.TLS.Key, "--turns-listen", c.ip+":443")
	}
	args = append(args, c.storeArgs()...)
	args = append(args, c.Args...)
	if c.IPv6 {
		// Later flags win (over Args too): the API on both families, STUN's RFC 5780
		// pair on IPv4 as before plus the IPv6 address.
		args = append(args, "--listen", ":8080",
			"--stun-listen", c.ip+":3478,["+CoordinatorIPv6+"]:3478",
			"--public-host", c.ip, "--public-ipv6", CoordinatorIPv6)
	}
	var err error
	c.Proc, err = c.Host.Start(c.Bins.Coordinator, args...)
	if err != nil {
		return err
	}
	err = natlab.Poll(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		if c.Proc.Exited() {
			return natlab.Fatal(fmt.Errorf("coordinator exited: %v\n%s", c.Proc.Wait(0), c.Proc.Log()))
		}
		return c.Host.WaitTCP(ctx, c.ip+":8080", 0)
	})
	if err != nil {
		return fmt.Errorf("meshlab: coordinator not ready: %w", err)
	}
	return nil
}

// AuthKey creates an auth key (single-use unless reusable); extra flags such
// as "--expiry", "1s" are passed on. The key is the last line of stdout.
func (c *Coordinator) AuthKey(ctx context.Context, reusable bool, extra ...string) (string, error) {
	args := append([]string{"authkey", "create", "--state", c.StateDir}, c.storeArgs()...)
	if reusable {
		args = append(args, "--reusable")
	}
	out, err := c.Host.Run(ctx, c.Bins.Coordinator, append(args, extra...)...)
	if err != nil {
		return "", fmt.Errorf("meshlab: authkey create: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if key == "" {
		return "", fmt.Errorf("meshlab: authkey create printed no key")
	}
	return key, nil
}

// Nodes runs `meshvpn-coordinator nodes list --json`.
func (c *Coordinator) Nodes(ctx context.Context) ([]control.Node, error) {
	out, err := c.Host.Run(ctx, c.Bins.Coordinator, append([]string{"nodes", "list", "--json", "--state", c.StateDir}, c.storeArgs()...)...)
	if err != nil {
		return nil, fmt.Errorf("meshlab: nodes list: %w", err)
	}
	var nodes []control.Node
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		return nil, fmt.Errorf("meshlab: nodes list: %w in %q", err, out)
	}
	return nodes, nil
}

// Admin runs an admin command (e.g. "nodes", "remove", "NAME", "--json")
// with the coordinator's --state and returns its stdout.
func (c *Coordinator) Admin(ctx context.Context, args ...string) (string, error) {
	out, err := c.Host.Run(ctx, c.Bins.Coordinator, append(args, "--state", c.StateDir)...)
	if err != nil {
		return out, fmt.Errorf("meshlab: meshvpn-coordinator %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// storeArgs are the flags that name the store, if not the default.
func (c *Coordinator) storeArgs() []string {
	if c.Store == "" {
		return nil
	}
	return []string{"--store", c.Store}
}

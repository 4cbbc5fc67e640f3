package natlab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Logger receives the lab's progress and, when a test failed, the logs of
// the processes it ran. *testing.T satisfies it.
type Logger interface {
	Logf(format string, args ...any)
}

// testHooks are the testing.TB methods New uses when it is given a test: the
// lab then closes itself at the end of the test and dumps logs on failure.
type testHooks interface {
	Cleanup(func())
	Failed() bool
}

// Lab is one set of namespaces: an internet bridge, public hosts and sites.
type Lab struct {
	// Prefix starts the name of every namespace of this lab, e.g. "mv3f2a-".
	Prefix string
	// Dir holds the lab's logs and generated files. It is removed by Close
	// unless a test failed or NATLAB_KEEP=1 is set.
	Dir string

	log    Logger
	failed func() bool
	inet   string // namespace holding the internet bridge

	mu         sync.Mutex
	closed     bool
	namespaces []string
	hosts      map[string]*Host
	sites      []*Site
	procs      []*Proc
	closers    []io.Closer // in-process lab pieces (delay boxes)
	ports      int         // bridge ports made so far, named p1, p2, ...
	publicAuto int         // addresses handed to hosts of KindNone sites

	// bridgeMu serialises joining the bridge, so that every namespace on
	// it gets a route to every ISP hop's prefix (hop.go), whichever came
	// first.
	bridgeMu sync.Mutex
	bridged  []string   // namespaces on the bridge
	hops     []hopRoute // prefixes behind ISP hops
	// Dual stack (ipv6.go): set by EnableIPv6; the dual-stack namespaces
	// on the bridge and the sites' /48s they route.
	ipv6     bool
	bridged6 []string
	routes6  []hopRoute // sites' /48s, via their bridge-facing box
}

// Public address ranges a lab may use (TEST-NET-3 and TEST-NET-2). They all
// sit on the one internet bridge, reachable on-link from every public side.
var publicNets = []netip.Prefix{
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// New builds an empty lab: the internet namespace with its bridge. When log
// is a *testing.T (or B), the lab is closed when the test ends.
func New(log Logger) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, fmt.Errorf("natlab: %w", err)
	}
	if err := CleanupStale(log); err != nil {
		log.Logf("natlab: cleaning up stale namespaces: %v", err)
	}
	prefix, err := newPrefix()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "natlab-"+prefix)
	if err != nil {
		return nil, fmt.Errorf("natlab: lab dir: %w", err)
	}
	l := &Lab{Prefix: prefix, Dir: dir, log: log, hosts: map[string]*Host{}}
	// The owner file must exist before the first namespace does, so that a
	// concurrent CleanupStale never mistakes this lab for a crashed one.
	if err := writeOwner(prefix); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if th, ok := log.(testHooks); ok {
		th.Cleanup(l.Close)
		l.failed = th.Failed
	}
	if err := l.makeInternet(); err != nil {
		l.Close()
		return nil, err
	}
	log.Logf("natlab: lab %s in %s", prefix, dir)
	return l, nil
}

// newPrefix picks a random prefix not used by any existing namespace.
func newPrefix() (string, error) {
	existing, err := listNamespaces()
	if err != nil {
		return "", err
	}
	for range 20 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		p := "mv" + hex.EncodeToString(b[:]) + "-"
		clash := false
		for _, ns := range existing {
			if len(ns) >= len(p) && ns[:len(p)] == p {
				clash = true
			}
		}
		if !clash {
			return p, nil
		}
	}
	return "", fmt.Errorf("natlab: no free namespace prefix")
}

func (l *Lab) makeInternet() error {
	ns, err := l.addNamespace("internet")
	if err != nil {
		return err
	}
	l.inet = ns
	return runAll(
		[]string{"ip", "-n", ns, "link", "add", "br0", "type", "bridge"},
		[]string{"ip", "-n", ns, "link", "set", "br0", "up"},
	)
}

// addNamespace creates PREFIX+name with loopback up and IPv6 off, and
// records it for Close before doing anything else with it.
func (l *Lab) addNamespace(name string) (string, error) {
	ns := l.Prefix + name
	if err := run("ip", "netns", "add", ns); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	if err := writeEtc(ns); err != nil {
		return "", err
	}
	if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	for _, key := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
		if err := setSysctl(ns, key, "1"); err != nil {
			return "", err
		}
	}
	if l.IPv6() {
		// Interfaces made from now on inherit this: their link-local
		// addresses (the source of neighbour discovery) must not stay
		// tentative once IPv6 is turned on (LAB-NOTES.md).
		for _, key := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
			if err := setSysctl(ns, key, "0"); err != nil {
				return "", err
			}
		}
	}
	return ns, nil
}

// newHost creates a namespace for a host and registers it under name.
func (l *Lab) newHost(name string, site *Site) (*Host, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("natlab: bad host name %q (want [a-z][a-z0-9-]*, at most 40)", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("natlab: lab is closed")
	}
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("natlab: host %q exists", name)
	}
	h := &Host{Name: name, Site: site, lab: l}
	l.hosts[name] = h
	l.mu.Unlock()
	ns, err := l.addNamespace(name)
	if err != nil {
		return nil, err
	}
	h.NS = ns
	return h, nil
}

// connectInternet gives ns an interface ifname on the internet bridge with
// the public address ip, and in a dual-stack lab its IPv6 address too
// (returned; invalid in an IPv4-only lab).
func (l *Lab) connectInternet(ns, ifname string, ip netip.Addr) (netip.Addr, error) {
	return l.connectRouted(ns, ifname, ip, netip.Prefix{}, netip.Prefix{}, nil)
}

// connectRouted is connectInternet for an ISP hop (hop.go) when behind is
// valid: every other namespace on the bridge then routes behind via ip.
// Likewise behind6 (a dual-stack site's /48) via ns's IPv6 address.
// With a delay box (delay.go) the link goes through it: ns's ifname to
// the box's dsite, the box's dnet to the bridge.
func (l *Lab) connectRouted(ns, ifname string, ip netip.Addr, behind, behind6 netip.Prefix, box *Host) (netip.Addr, error) {
	l.bridgeMu.Lock()
	defer l.bridgeMu.Unlock()
	var onNet netip.Prefix
	for _, p := range publicNets {
		if p.Contains(ip) {
			onNet = p
		}
	}
	if !onNet.IsValid() {
		return netip.Addr{}, fmt.Errorf("natlab: %s is not in a lab public range %v", ip, publicNets)
	}
	l.mu.Lock()
	l.ports++
	port := "p" + strconv.Itoa(l.ports)
	l.mu.Unlock()
	cmds := [][]string{
		{"ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", l.inet},
	}
	if box != nil {
		cmds = [][]string{
			{"ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", delaySiteIf, "netns", box.NS},
			{"ip", "-n", box.NS, "link", "add", delayNetIf, "type", "veth", "peer", "name", port, "netns", l.inet},
			{"ip", "-n", box.NS, "link", "set", delaySiteIf, "promisc", "on", "up"},
			{"ip", "-n", box.NS, "link", "set", delayNetIf, "promisc", "on", "up"},
		}
	}
	cmds = append(cmds,
		[]string{"ip", "-n", l.inet, "link", "set", port, "master", "br0", "up"},
		[]string{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(ip, onNet.Bits()).String(), "dev", ifname},
		[]string{"ip", "-n", ns, "link", "set", ifname, "up"},
	)
	// The other public ranges share the bridge: reach them on-link.
	for _, p := range publicNets {
		if p != onNet {
			cmds = append(cmds, []string{"ip", "-n", ns, "route", "add", p.String(), "dev", ifname})
		}
	}
	var routes [][]string
	routes, l.hops, l.bridged = joinRoutes(ns, l.hops, l.bridged, behind, ip)
	cmds = append(cmds, routes...)
	if err := runAll(cmds...); err != nil || !l.ipv6 {
		return netip.Addr{}, err
	}
	return l.joinBridge6(ns, ifname, ip, behind6)
}

// AddPublicHost adds a host with a public address on the internet bridge.
// ip must be in 203.0.113.0/24 or 198.51.100.0/24; by convention callers use
// .1-.99 (the rest is handed out by AddSite). In a dual-stack lab it also
// gets IP6 (see ipv6.go).
func (l *Lab) AddPublicHost(name, ip string) (*Host, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("natlab: public host %s: %w", name, err)
	}
	h, err := l.newHost(name, nil)
	if err != nil {
		return nil, err
	}
	h.IP6, err = l.connectInternet(h.NS, "eth0", addr)
	if err != nil {
		return nil, fmt.Errorf("natlab: public host %s: %w", name, err)
	}
	h.IP = addr
	return h, nil
}

// Host returns the host (or router) called name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Close stops every process started in the lab and deletes its namespaces.
// It is safe to call more than once. When the test failed it first writes
// the process logs to the logger and keeps Dir.
func (l *Lab) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	closers := append([]io.Closer(nil), l.closers...)
	namespaces := append([]string(nil), l.namespaces...)
	l.mu.Unlock()

	// SIGTERM all first, so that agents shut down (and remove their TUN) in
	// parallel; then give each a few seconds before SIGKILL.
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		p.Stop(5 * time.Second)
	}
	for _, c := range closers {
		c.Close()
	}
	failed := l.failed != nil && l.failed()
	if failed {
		l.DumpLogs()
	}
	for i := len(namespaces) - 1; i >= 0; i-- {
		deleteNamespace(namespaces[i])
	}
	removeOwner(l.Prefix)
	if failed || os.Getenv("NATLAB_KEEP") == "1" {
		l.log.Logf("natlab: lab files kept in %s", l.Dir)
	} else {
		os.RemoveAll(l.Dir)
	}
}

// addCloser has Close close c (before the namespaces go), or closes it
// now when the lab is already closed.
func (l *Lab) addCloser(c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return fmt.Errorf("natlab: lab is closed")
	}
	l.closers = append(l.closers, c)
	return nil
}

// DumpLogs writes the tail of every process log and command log of the lab
// to the logger, so that a failing test shows what the processes said.
func (l *Lab) DumpLogs() {
	l.mu.Lock()
	procs := append([]*Proc(nil), l.procs...)
	l.mu.Unlock()
	for _, p := range procs {
		l.log.Logf("natlab: ===== %s (%s) =====\n%s", p.Name, p.LogPath, tail(p.Log(), 150))
	}
	runLogs, _ := filepath.Glob(filepath.Join(l.Dir, "*.run.log"))
	for _, path := range runLogs {
		data, _ := os.ReadFile(path)
		l.log.Logf("natlab: ===== commands %s =====\n%s", filepath.Base(path), tail(string(data), 60))
	}
}

// Logf writes to the lab's logger.
func (l *Lab) Logf(format string, args ...any) { l.log.Logf(format, args...) }

func (l *Lab) addProc(p *Proc) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("natlab: lab is closed")
	}
	l.procs = append(l.procs, p)
	return nil
}

package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/netcheck"
)

// What an agent tells its peers about its own network, so each side can
// say why a path is not direct.
const (
	natSymmetric  = "symmetric"   // the mapping varies by destination
	natUDPBlocked = "udp-blocked" // no STUN answer over UDP at all
	natPortMapped = "port-mapped" // the gateway forwards a port to us (portmap)
)

const natProbeTimeout = 2 * time.Second

// probeNAT asks every STUN server for our mapped address from one fresh
// socket: no answer at all means UDP is blocked; two different mapped
// ports mean a symmetric NAT. One server (or one answer) cannot tell, and
// gives "", as does a host with no IPv4 route. It also returns the mapped
// addresses seen.
//
// The socket must be fresh and only ever receive answers to its own
// requests: on a router without an input firewall, an unsolicited packet
// from a server (such as a reply to an RFC 5780 CHANGE-REQUEST) leaves a
// conntrack entry that moves the socket's later mapping toward that
// server, and a cone NAT would read as symmetric. So no filtering test
// here: netcheck does those from a socket of their own.
func probeNAT(servers []string) (string, []netip.AddrPort) {
	if len(servers) == 0 {
		return "", nil
	}
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return "", nil
	}
	defer pc.Close()
	var mapped []netip.AddrPort
	unreachable := 0
	for _, s := range servers {
		m, err := stunMapped(pc, s)
		switch {
		case err == nil:
			mapped = append(mapped, m)
		case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
			unreachable++
		}
	}
	switch {
	case len(mapped) == 0 && unreachable == len(servers):
		// No IPv4 route (an IPv6-only host): no IPv4 NAT to describe,
		// and UDP may well work over IPv6.
		return "", nil
	case len(mapped) == 0:
		return natUDPBlocked, nil
	case len(mapped) >= 2 && mapped[0] != mapped[1]:
		return natSymmetric, mapped
	}
	return "", mapped
}

// probeNATConfirmed is probeNAT, with a symmetric reading confirmed from a
// second fresh socket. A port-preserving NAT (Linux masquerade) gives a
// flow a new port when another flow already holds the socket's port
// toward that server: another LAN host on the same port, or, on a router
// without an input firewall, entries a previous run left. The socket then
// reads as symmetric, and a pair that could punch relays instead
// (TestBirthdayPunch saw it right after a restart: 2 ports, 60057 and
// 15979, for one socket of a port-restricted NAT). Another socket seldom
// collides again; a real symmetric NAT reads so from both.
func probeNATConfirmed(servers []string) (string, []netip.AddrPort) {
	label, mapped := probeNAT(servers)
	if label != natSymmetric {
		return label, mapped
	}
	if again, m := probeNAT(servers); again != natSymmetric && len(m) >= 2 {
		return again, m
	}
	return label, mapped
}

// stunMapped sends one Binding request (twice, for loss) and returns the
// XOR-MAPPED-ADDRESS of the answer.
func stunMapped(pc net.PacketConn, server string) (netip.AddrPort, error) {
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	deadline := time.Now().Add(natProbeTimeout)
	buf := make([]byte, 1500)
	for try := 0; try < 2; try++ {
		if _, err := pc.WriteTo(req.Raw, to); err != nil {
			return netip.AddrPort{}, err
		}
		_ = pc.SetReadDeadline(minTime(deadline, time.Now().Add(natProbeTimeout/2)))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			var m stun.Message
			m.Raw = append(m.Raw[:0], buf[:n]...)
			if m.Decode() != nil || m.TransactionID != req.TransactionID {
				continue
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(&m); err != nil {
				return netip.AddrPort{}, err
			}
			ip, ok := netip.AddrFromSlice(xa.IP)
			if !ok {
				return netip.AddrPort{}, errors.New("bad mapped address")
			}
			return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
		}
	}
	return netip.AddrPort{}, errors.New("no STUN answer")
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// natFilterTimeout bounds the filtering probe's wait for a reply that a
// filtering NAT drops; it delays a peer's first direct session.
const natFilterTimeout = time.Second

// probeFiltering measures what the NAT lets in, with netcheck's filtering
// tests (on a socket of their own, so nothing here disturbs a mapping).
// It returns netcheck.Unknown when the servers cannot tell (no alternate
// address): "" means "not measured yet" to peers.
func probeFiltering(servers []control.STUNServer) string {
	if len(servers) == 0 {
		return netcheck.Unknown
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*natFilterTimeout)
	defer cancel()
	r, err := netcheck.Run(ctx, netcheck.Config{STUN: servers, ProbeTimeout: natFilterTimeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil || r.Filtering == "" {
		return netcheck.Unknown
	}
	return r.Filtering
}

// natState is the agent's latest probeNAT and probeFiltering result.
type natState struct {
	mu        sync.Mutex
	label     string
	filtering string
	openTTL   int
	probed    bool // a probe has finished
	next      time.Time
	running   bool
}

const natRecheck = 5 * time.Minute

// natTick re-probes the NAT when due, off the caller's goroutine.
func (a *Agent) natTick(now time.Time) {
	servers := a.stunURLs()
	a.mu.Lock()
	servers = append(slices.Clone(servers), a.stunAlt...)
	full := slices.Clone(a.stunServers)
	a.mu.Unlock()
	n := &a.nat
	n.mu.Lock()
	if n.running || len(servers) == 0 || now.Before(n.next) {
		n.mu.Unlock()
		return
	}
	n.running = true
	n.mu.Unlock()
	go func() {
		filtering := make(chan string, 1)
		go func() { filtering <- probeFiltering(full) }()
		ttl := probeOpenTTLTo(servers[0])
		label, mapped := probeNATConfirmed(servers)
		filt := <-filtering
		n.mu.Lock()
		changed, first := label != n.label || filt != n.filtering || ttl != n.openTTL, !n.probed
		n.label, n.filtering, n.openTTL, n.probed, n.running, n.next = label, filt, ttl, true, false, time.Now().Add(natRecheck)
		n.mu.Unlock()
		if changed || first {
			a.log.Info("local network", "nat", cmp.Or(label, "no symmetric NAT seen"), "filtering", cmp.Or(filt, "unknown"), "open_ttl", ttl, "servers", len(servers), "mapped", mapped)
		}
		if changed || first {
			a.announceNAT()
		}
	}()
}

// natLabel is what peers are told about this node's network. A port
// mapping makes even a symmetric NAT reachable, so it wins.
func (a *Agent) natLabel() string {
	if _, ok := a.portMapping(); ok {
		return natPortMapped
	}
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return a.nat.label
}

// selfNATView is this node's side of the punch order (punchorder.go).
func (a *Agent) selfNATView() natView {
	_, mapped := a.portMapping()
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return natView{Filtering: a.nat.filtering, PortMapped: mapped, OpenTTL: a.nat.openTTL,
		Symmetric: a.nat.label == natSymmetric, SyncOpen: syncOpenEnabled}
}

// natOpenTTL is what peers are told of this node's opening TTL.
func (a *Agent) natOpenTTL() int {
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return a.nat.openTTL
}

// natFiltering is what peers are told of this node's NAT filtering.
func (a *Agent) natFiltering() string {
	a.nat.mu.Lock()
	defer a.nat.mu.Unlock()
	return a.nat.filtering
}

// pathEnv gathers what status needs to explain paths.
func (a *Agent) pathEnv() pathEnv {
	env := pathEnv{localNAT: a.natLabel()}
	if a.relays.choice() == nil {
		checks := a.relays.snapshot()
		switch {
		case len(checks) == 0:
			env.relayErr = "no relay configured on the coordinator"
		default:
			env.relayErr = checks[0].Err
			for _, c := range checks[1:] {
				env.relayErr += "; " + c.Err
			}
		}
	}
	return env
}

package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// policyOneWay lets the laptop ssh to (and ping) servers, and nothing else.
const policyOneWay = `{
  // the laptop may ssh to servers; servers may open nothing
  "acls": [
    {"action": "accept", "src": ["laptop"], "dst": ["tag:server:22"]},
    {"action": "accept", "src": ["laptop"], "proto": "icmp", "dst": ["tag:server:*"]},
  ],
  "tests": [
    {"src": "laptop", "accept": ["tag:server:22"], "deny": ["tag:server:80"]},
  ],
}
`

// policyBack adds two rules: the server may reach the laptop's port 8022,
// and the laptop may ping the printer (which then becomes its peer).
var policyBack = strings.Replace(policyOneWay, `  ],
  "tests"`, `    {"action": "accept", "src": ["tag:server"], "dst": ["laptop:8022"]},
    {"action": "accept", "src": ["laptop"], "proto": "icmp", "dst": ["printer:*"]},
  ],
  "tests"`, 1)

// waitPeers polls a's status until it lists peer (or no longer does) and
// returns how long that took.
func waitPeers(t *testing.T, a *meshlab.Agent, peer string, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		st, err := a.Status(t.Context())
		if err == nil && (st.Peer(peer) != nil) == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s lists %s: want %v after %v (%v)", a.Name, peer, want, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listenIn listens on TCP port in h's namespace and accepts (and closes)
// connections until the test ends.
func listenIn(t *testing.T, h *natlab.Host, port int) {
	t.Helper()
	listenOn(t, h, "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
}

// listenOn is listenIn on any TCP network ("tcp4", "tcp6") and address.
func listenOn(t *testing.T, h *natlab.Host, network, addr string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dialFrom opens a TCP connection from h's namespace.
func dialFrom(h *natlab.Host, addr string, timeout time.Duration) error {
	return dialNet(h, "tcp4", addr, timeout)
}

// dialNet is dialFrom on any TCP network ("tcp4", "tcp6").
func dialNet(h *natlab.Host, network, addr string, timeout time.Duration) error {
	return h.Do(func() error {
		c, err := net.DialTimeout(network, addr, timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// setPolicy writes src to a file and runs `policy set` against the running
// coordinator.
func setPolicy(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, src string) {
	t.Helper()
	path := filepath.Join(lab.Dir, fmt.Sprintf("policy-%d.hujson", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := coord.Admin(t.Context(), "policy", "set", path); err != nil {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
}

// waitDial polls connections from h to addr until one succeeds (want) or
// fails, and returns how long that took.
func waitDial(t *testing.T, h *natlab.Host, addr string, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := dialFrom(h, addr, 150*time.Millisecond)
		if (err == nil) == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("dial %s: still %v after %v", addr, err, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// policyLab is a lab under policyOneWay with the laptop and the server
// (tagged "server") prepared, not started, and the keys they join with.
type policyLab struct {
	lab              *natlab.Lab
	coord            *meshlab.Coordinator
	laptop, server   *meshlab.Agent
	plain, serverKey string
}

func newPolicyLab(t *testing.T) policyLab {
	t.Helper()
	lab, coord := newLab(t)
	setPolicy(t, lab, coord, policyOneWay)
	pl := policyLab{lab: lab, coord: coord, plain: authKey(t, coord, true)}
	var err error
	if pl.serverKey, err = coord.AuthKey(t.Context(), true, "--tag", "server"); err != nil {
		t.Fatal(err)
	}
	pl.laptop = addSiteAgent(t, lab, coord, "laptop", sshClientNAT)
	pl.server = addSiteAgent(t, lab, coord, "server", sshServerNAT)
	return pl
}

// checkOneWay: over IPv4, the server's port 80 is open but closed to the
// laptop, and the server cannot open a connection to the laptop (8022).
func checkOneWay(t *testing.T, laptop, server *meshlab.Agent, laptopIP, serverIP string) {
	t.Helper()
	listenIn(t, server.Host, 80)
	if err := dialFrom(server.Host, serverIP+":80", time.Second); err != nil {
		t.Fatalf("port 80 does not answer on the server itself: %v", err)
	}
	if err := dialFrom(laptop.Host, serverIP+":80", 2*time.Second); err == nil {
		t.Fatal("laptop reached the server's port 80 over IPv4")
	} else {
		t.Logf("laptop → server:80: %v (as the policy says)", err)
	}
	listenIn(t, laptop.Host, 8022)
	if err := dialFrom(server.Host, laptopIP+":8022", 2*time.Second); err == nil {
		t.Fatal("server opened a connection to the laptop over IPv4")
	}
}

// checkLaptopBlocked: the server's status says the policy blocks the
// laptop and counts the server's packets it dropped.
func checkLaptopBlocked(t *testing.T, server *meshlab.Agent) {
	t.Helper()
	st := status(t, server)
	p := st.Peer("laptop")
	if p == nil || p.Policy != "blocked by policy" || p.PolicyDropsOut == 0 {
		t.Fatalf("server's status of the laptop: %+v", p)
	}
	t.Logf("server status: laptop policy %q, dropped %d in, %d out", p.Policy, p.PolicyDropsIn, p.PolicyDropsOut)
}

// TestPolicyEnforced runs a real policy on real agents: the laptop may ssh
// to the server but not reach its port 80; the server answers the ssh but
// cannot open a connection to the laptop; a node in no rule sees no peers;
// a policy change flips access within a second with nothing restarted.
func TestPolicyEnforced(t *testing.T) {
	pl := newPolicyLab(t)
	lab, coord, laptop, server := pl.lab, pl.coord, pl.laptop, pl.server
	ctx := t.Context()
	printer := addSiteAgent(t, lab, coord, "printer", natlab.PortRestricted)
	for _, s := range []struct {
		a   *meshlab.Agent
		key string
	}{{laptop, pl.plain}, {server, pl.serverKey}, {printer, pl.plain}} {
		if err := s.a.Up(ctx, s.key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{laptop, server}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	laptopIP, serverIP := overlayIP(t, laptop), overlayIP(t, server)
	if out, err := pingUntil(ctx, laptop, serverIP, 30*time.Second); err != nil {
		t.Fatalf("laptop → server ping (allowed): %v\n%s", err, out)
	}

	// The laptop may ssh to the server.
	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sshd.Run(ctx, laptop.Host, serverIP, "echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("ssh laptop → server (allowed): %v\n%s", err, out)
	}
	checkOneWay(t, laptop, server, laptopIP, serverIP)
	checkLaptopBlocked(t, server)
	if out, err := server.Ping(ctx, "laptop", 1); err == nil || !strings.Contains(err.Error(), "blocked by policy") {
		t.Fatalf("meshvpn ping laptop from the server: %v\n%s", err, out)
	}
	// The laptop's status: what it may open, and its port-80 drop.
	st, err := laptop.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peer("server"); p == nil || p.Policy != "port 22; icmp" || p.PolicyDropsOut == 0 {
		t.Fatalf("laptop's status of the server: %+v", p)
	}
	// A node in no rule sees no peers, and no one sees it.
	st, err = printer.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 0 {
		t.Fatalf("printer sees %d peers, want none", len(st.Peers))
	}
	if st, _ := laptop.Status(ctx); st.Peer("printer") != nil {
		t.Fatal("laptop sees the printer")
	}

	// Open the way back: the server reaches the laptop within a second
	// of the command, nothing restarted.
	setPolicy(t, lab, coord, policyBack)
	took := waitDial(t, server.Host, laptopIP+":8022", true, 5*time.Second)
	t.Logf("server → laptop:8022 opened %v after policy set returned", took)
	if took > time.Second {
		t.Fatalf("access flipped after %v, want within 1 s", took)
	}
	// The printer is now the laptop's peer (a trimmed netmap grows).
	if took := waitPeers(t, printer, "laptop", true, 5*time.Second); took > time.Second {
		t.Fatalf("the printer listed the laptop %v after policy set, want within 1 s", took)
	} else {
		t.Logf("printer lists the laptop %v after policy set returned", took)
	}
	// And close it again.
	setPolicy(t, lab, coord, policyOneWay)
	took = waitDial(t, server.Host, laptopIP+":8022", false, 5*time.Second)
	t.Logf("server → laptop:8022 closed %v after policy set returned", took)
	if took > time.Second {
		t.Fatalf("access flipped back after %v, want within 1 s", took)
	}
	if took := waitPeers(t, printer, "laptop", false, 5*time.Second); took > time.Second {
		t.Fatalf("the printer still listed the laptop %v after policy set, want within 1 s", took)
	}
	// ssh still works: the tunnel was never restarted.
	if out, err := sshd.Run(ctx, laptop.Host, serverIP, "echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("ssh after the policy changes: %v\n%s", err, out)
	}
}

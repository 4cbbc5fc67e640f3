package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// Lab addresses of the names test: the laptop's original resolver, a
// public host, and a name only it knows.
const (
	upstreamDNSIP = "203.0.113.53"
	outsideName   = "www.example.test"
	outsideIP     = "198.51.100.80"
)

// laptopResolvConf is the laptop's resolv.conf before the agent: the
// lab's resolver, a search domain and an option, which the agent keeps.
const laptopResolvConf = "# laptop's own resolver (lab)\nnameserver " + upstreamDNSIP + "\nsearch example.test\noptions timeout:1 attempts:2\n"

// TestNames: with the agent up, a host reaches its peers by name with
// real getent, ping and ssh (glibc reading the namespace's bind-mounted
// resolv.conf, which the agent rewrote in place); names outside the mesh
// still resolve through the original resolver; a rename takes effect at
// once; a member naming itself like an outside host cannot take that name
// over; the resolver does not serve the LAN; and resolv.conf comes back
// byte for byte after a clean stop, and after SIGKILL plus a restart.
func TestNames(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	key := authKey(t, coord, true)

	dnsHost, err := lab.AddPublicHost("dns", upstreamDNSIP)
	if err != nil {
		t.Fatal(err)
	}
	startTool(t, dnsHost, "dns-server", "-listen", upstreamDNSIP+":53", outsideName+"="+outsideIP)

	laptop := addSiteAgent(t, lab, coord, "laptop", sshClientNAT)
	server := addSiteAgent(t, lab, coord, "server", sshServerNAT)
	neighbour, err := laptop.Host.Site.AddHost("neighbour")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(laptop.Host.ResolvConf(), []byte(laptopResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The original resolver works before the agent starts.
	getent(t, laptop.Host, outsideName, outsideIP)

	for _, a := range []*meshlab.Agent{laptop, server} {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{laptop, server}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	serverIP := overlayIP(t, server)

	// Status says how names work here.
	waitStatus(t, laptop, 10*time.Second, func(st *meshlab.Status) error {
		if st.Self.DNS == nil || st.Self.DNS.Mode != "resolv.conf" {
			return fmt.Errorf("dns status %+v, want mode resolv.conf", st.Self.DNS)
		}
		return nil
	})
	st, err := laptop.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := st.Self.DNS; d.Domain != "mesh.internal" || d.Resolver != "100.100.100.100" {
		t.Errorf("self.dns = %+v", d)
	}
	if p := st.Peer("server"); p == nil || p.DNSName != "server.mesh.internal" {
		t.Errorf("peer server's dns_name: %+v", p)
	}
	conf := readFile(t, laptop.Host.ResolvConf())
	t.Logf("laptop's resolv.conf while the agent runs:\n%s", conf)
	for _, want := range []string{"nameserver 100.100.100.100\n", "search mesh.internal example.test\n", "options timeout:1 attempts:2\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("resolv.conf lacks %q", want)
		}
	}

	// By name: getent (glibc), ping, ssh; plain NAME through the search
	// domain and the full name.
	getent(t, laptop.Host, "server", serverIP)
	getent(t, laptop.Host, "server.mesh.internal", serverIP)
	// Outside the mesh: the original resolver, its search domain too.
	getent(t, laptop.Host, outsideName, outsideIP)
	getent(t, laptop.Host, "www", outsideIP)
	if out, err := laptop.Host.Run(ctx, "getent", "hosts", "nobody.mesh.internal"); err == nil {
		t.Errorf("getent nobody.mesh.internal found %q", out)
	}

	// A member picks its hostname: one calling itself www.example.test
	// becomes "www" in the mesh and cannot take over the real name.
	evilHost, err := server.Host.Site.AddHost("evil")
	if err != nil {
		t.Fatal(err)
	}
	evil, err := meshlab.NewAgent(coord, evilHost, outsideName)
	if err != nil {
		t.Fatal(err)
	}
	if err := evil.Up(ctx, key, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	evilIP := overlayIP(t, evil)
	waitStatus(t, laptop, 10*time.Second, func(st *meshlab.Status) error {
		if p := st.Peer("www"); p == nil || p.DNSName != "www.mesh.internal" {
			return fmt.Errorf("no peer www.mesh.internal yet: %+v", p)
		}
		return nil
	})
	getent(t, laptop.Host, "www.mesh.internal", evilIP)
	getent(t, laptop.Host, outsideName, outsideIP)
	if out, err := pollRun(ctx, laptop.Host, 30*time.Second, "ping", "-c", "1", "-W", "2", "server"); err != nil {
		t.Fatalf("ping server: %v\n%s", err, out)
	} else if !strings.Contains(out, serverIP) {
		t.Errorf("ping server did not reach %s:\n%s", serverIP, out)
	}
	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sshd.Run(ctx, laptop.Host, "server", `echo "$SSH_CONNECTION"; ip netns identify`)
	if err != nil {
		t.Fatalf("ssh server: %v\n%s", err, out)
	}
	if f := strings.Fields(out); len(f) < 5 || f[2] != serverIP || f[4] != server.Host.NS {
		t.Errorf("ssh server ran %q, want a connection to %s in %s", out, serverIP, server.Host.NS)
	}

	// A rename: the new name resolves, the old one no longer, at once.
	start := time.Now()
	if _, err := coord.Admin(ctx, "nodes", "rename", "server", "db"); err != nil {
		t.Fatal(err)
	}
	if _, err := pollRun(ctx, laptop.Host, 5*time.Second, "getent", "hosts", "db"); err != nil {
		t.Fatalf("renamed server: %v", err)
	}
	took := time.Since(start)
	t.Logf("rename: `getent hosts db` answered %v after `nodes rename`", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("rename took %v to reach the resolver, want under 1 s", took)
	}
	if out, err := laptop.Host.Run(ctx, "getent", "hosts", "server"); err == nil {
		t.Errorf("old name still resolves: %q", out)
	}

	// Not an open resolver: a LAN neighbour routing 100.100.100.100 to
	// the laptop gets nothing, nor does it find a resolver on the LAN
	// address; the laptop itself is answered.
	if _, err := neighbour.Run(ctx, "ip", "route", "add", "100.100.100.100/32", "via", laptop.Host.IP.String()); err != nil {
		t.Fatal(err)
	}
	for _, srv := range []string{"100.100.100.100:53", laptop.Host.IP.String() + ":53"} {
		if out, err := toolOnce(ctx, neighbour, "dns-query", "-server", srv, "-name", "db.mesh.internal"); err == nil {
			t.Errorf("LAN neighbour got an answer from %s: %s", srv, out)
		}
	}
	if out, err := toolOnce(ctx, laptop.Host, "dns-query", "-name", "db.mesh.internal"); err != nil || !strings.Contains(out, serverIP) {
		t.Errorf("laptop's own query: %q %v", out, err)
	}

	// Clean stop: the original, byte for byte.
	if err := laptop.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, laptop.Host.ResolvConf()); got != laptopResolvConf {
		t.Fatalf("after a clean stop resolv.conf is\n%q\nwant\n%q", got, laptopResolvConf)
	}

	// SIGKILL leaves ours in place; the next start puts the original back
	// first (here with --accept-dns=false, so it stays), and the resolver
	// still answers on 100.100.100.100.
	if err := laptop.Start(""); err != nil {
		t.Fatal(err)
	}
	waitResolvConf(t, laptop, func(s string) bool { return strings.Contains(s, "nameserver 100.100.100.100") })
	laptop.Proc.Signal(syscall.SIGKILL)
	laptop.Proc.Wait(5 * time.Second)
	if got := readFile(t, laptop.Host.ResolvConf()); got == laptopResolvConf {
		t.Fatal("resolv.conf already restored after SIGKILL: the test proves nothing")
	}
	laptop.ExtraArgs = append(laptop.ExtraArgs, "--accept-dns=false")
	if err := laptop.Up(ctx, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, laptop.Host.ResolvConf()); got != laptopResolvConf {
		t.Fatalf("after SIGKILL and a restart resolv.conf is\n%q\nwant\n%q", got, laptopResolvConf)
	}
	if !strings.Contains(laptop.Proc.Log(), "restored the original resolv.conf") {
		t.Error("the restart did not say it restored resolv.conf")
	}
	waitStatus(t, laptop, 10*time.Second, func(st *meshlab.Status) error {
		if st.Self.DNS == nil || st.Self.DNS.Mode != "off" || st.Self.DNS.Resolver != "100.100.100.100" {
			return fmt.Errorf("dns status %+v, want mode off with the resolver", st.Self.DNS)
		}
		return nil
	})
	if out, err := pollTool(ctx, laptop.Host, 10*time.Second, "dns-query", "-name", "db.mesh.internal"); err != nil || !strings.Contains(out, serverIP) {
		t.Errorf("resolver with --accept-dns=false: %q %v", out, err)
	}
	if err := laptop.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, laptop.Host.ResolvConf()); got != laptopResolvConf {
		t.Fatalf("--accept-dns=false changed resolv.conf:\n%q", got)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// getent resolves name on h with the C library and wants ip.
func getent(t *testing.T, h *natlab.Host, name, ip string) {
	t.Helper()
	out, err := pollRun(t.Context(), h, 10*time.Second, "getent", "hosts", name)
	if err != nil {
		t.Fatalf("getent hosts %s on %s: %v", name, h.Name, err)
	}
	if f := strings.Fields(out); len(f) == 0 || f[0] != ip {
		t.Fatalf("getent hosts %s on %s = %q, want %s", name, h.Name, out, ip)
	}
}

// pollRun runs a command on h until it succeeds, for at most timeout.
func pollRun(ctx context.Context, h *natlab.Host, timeout time.Duration, name string, args ...string) (string, error) {
	var out string
	err := natlab.Poll(ctx, timeout, 50*time.Millisecond, func() error {
		var err error
		out, err = h.Run(ctx, name, args...)
		return err
	})
	return out, err
}

// startTool runs a tool mode of the test binary on h until the lab ends.
func startTool(t testing.TB, h *natlab.Host, mode string, args ...string) *natlab.Proc {
	t.Helper()
	name, argv, err := toolCommand(mode, args...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Start(name, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitLog("ready", 10*time.Second); err != nil {
		t.Fatalf("%s on %s: %v\n%s", mode, h.Name, err, p.Log())
	}
	return p
}

// toolOnce runs a tool mode of the test binary on h once.
func toolOnce(ctx context.Context, h *natlab.Host, mode string, args ...string) (string, error) {
	name, argv, err := toolCommand(mode, args...)
	if err != nil {
		return "", err
	}
	return h.Run(ctx, name, argv...)
}

func pollTool(ctx context.Context, h *natlab.Host, timeout time.Duration, mode string, args ...string) (string, error) {
	var out string
	err := natlab.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		var err error
		out, err = toolOnce(ctx, h, mode, args...)
		return err
	})
	return out, err
}

func waitResolvConf(t *testing.T, a *meshlab.Agent, ok func(string) bool) {
	t.Helper()
	err := natlab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() error {
		if err := a.Running(); err != nil {
			return natlab.Fatal(err)
		}
		if !ok(readFile(t, a.Host.ResolvConf())) {
			return errors.New("resolv.conf not as wanted yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

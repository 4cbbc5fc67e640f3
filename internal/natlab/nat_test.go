package natlab

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// toolArgs returns the `env` arguments that run this test binary as the UDP
// tool (see TestMain).
func toolArgs(t *testing.T, args ...string) []string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"NATLAB_UDPTOOL=1", exe, "--"}, args...)
}

// TestNATBehaviour checks each NAT kind's mapping and filtering with real
// UDP: a client behind the NAT talks to echo servers on two public hosts
// (A and B), then A from another port and an uncontacted host C send
// unsolicited probes to the client's mapping.
func TestNATBehaviour(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	a := mustPublic(t, lab, "a", "203.0.113.20")
	b := mustPublic(t, lab, "b", "203.0.113.21")
	c := mustPublic(t, lab, "c", "198.51.100.22") // also proves the two public ranges route
	for _, h := range []*Host{a, b} {
		p, err := h.Start("env", toolArgs(t, "echo", "-listen", ":3478")...)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitLog("listening", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		kind          Kind
		samePort      bool // endpoint-independent mapping
		fromOtherPort bool // A:3479 may come in (A:3478 was contacted)
		fromOther     bool // C, never contacted, may come in
	}{
		{FullCone, true, true, true},
		{RestrictedCone, true, true, false},
		{PortRestricted, true, false, false},
		{Symmetric, false, false, false},
		{DoubleNAT, true, false, false},
	}
	// Neither variant changes what a host's own flows see.
	for _, v := range Variants {
		for _, tc := range tests {
			name := tc.kind.String() + "-" + v.String()
			site, err := lab.AddSiteSpec(name, SiteSpec{Kind: tc.kind, Variant: v})
			if err != nil {
				t.Fatal(err)
			}
			t.Run(name, func(t *testing.T) {
				client, err := site.Host.Start("env", toolArgs(t, "client", "-bind", "0.0.0.0:40000",
					"-echo", "203.0.113.20:3478,203.0.113.21:3478", "-listen", "2s")...)
				if err != nil {
					t.Fatal(err)
				}
				if err := client.WaitLog("ready", 10*time.Second); err != nil {
					t.Fatal(err)
				}
				mapped := parseMapped(t, client.Log())
				viaA, viaB := mapped["203.0.113.20:3478"], mapped["203.0.113.21:3478"]
				if viaA.Addr() != site.PublicIP() || viaB.Addr() != site.PublicIP() {
					t.Errorf("mapped addresses %v, %v; want the site's public %v", viaA, viaB, site.PublicIP())
				}
				if got := viaA.Port() == viaB.Port(); got != tc.samePort {
					t.Errorf("mapping to A is %v, to B is %v: same port = %v, want %v", viaA, viaB, got, tc.samePort)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for _, h := range []*Host{a, c} {
					if _, err := h.Run(ctx, "env", toolArgs(t, "probe", "-bind", "0.0.0.0:3479", "-to", viaA.String())...); err != nil {
						t.Fatal(err)
					}
				}
				if err := client.Wait(10 * time.Second); err != nil {
					t.Fatalf("client: %v\n%s", err, client.Log())
				}
				log := client.Log()
				gotA := strings.Contains(log, "from 203.0.113.20:3479 probe")
				gotC := strings.Contains(log, "from 198.51.100.22:3479 probe")
				if gotA != tc.fromOtherPort {
					t.Errorf("probe from contacted address, other port (A:3479) received = %v, want %v", gotA, tc.fromOtherPort)
				}
				if gotC != tc.fromOther {
					t.Errorf("probe from uncontacted address (C) received = %v, want %v", gotC, tc.fromOther)
				}
				t.Logf("%s: mapped via A %v, via B %v; inbound from A:3479 %v, from C %v", name, viaA, viaB, gotA, gotC)
			})
		}
	}
}

func mustPublic(t *testing.T, lab *Lab, name, ip string) *Host {
	t.Helper()
	h, err := lab.AddPublicHost(name, ip)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// parseMapped reads the client's "mapped SERVER OBSERVED" lines, two.
func parseMapped(t *testing.T, log string) map[string]netip.AddrPort {
	t.Helper()
	return parseMappedN(t, log, 2)
}

// parseMappedN reads n "mapped SERVER OBSERVED" lines.
func parseMappedN(t *testing.T, log string, n int) map[string]netip.AddrPort {
	t.Helper()
	m := map[string]netip.AddrPort{}
	for _, line := range strings.Split(log, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "mapped" {
			ap, err := netip.ParseAddrPort(f[2])
			if err != nil {
				t.Fatalf("bad mapping line %q: %v", line, err)
			}
			m[f[1]] = ap
		}
	}
	if len(m) != n {
		t.Fatalf("want %d mappings, got %v from log:\n%s", n, m, log)
	}
	return m
}

// TestCloseRemovesNamespaces checks that Close leaves nothing behind.
func TestCloseRemovesNamespaces(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	site, err := lab.AddSite("s", PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.Host.Start("sleep", "60"); err != nil {
		t.Fatal(err)
	}
	// Commands in the lab see the host's own resolv.conf, never the
	// machine's (an agent rewrites the one it sees).
	if out, err := site.Host.Run(t.Context(), "cat", "/etc/resolv.conf"); err != nil || out != defaultResolvConf {
		t.Fatalf("lab host's /etc/resolv.conf = %q, %v; want the lab's own", out, err)
	}
	lab.Close()
	if fileExists(site.Host.ResolvConf()) {
		t.Errorf("%s survived Close", site.Host.ResolvConf())
	}
	names, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range names {
		if strings.HasPrefix(ns, lab.Prefix) {
			t.Errorf("namespace %s survived Close", ns)
		}
	}
	if fileExists(ownerFile(lab.Prefix)) {
		t.Errorf("owner file %s survived Close", ownerFile(lab.Prefix))
	}
}

// TestCleanupStale fakes a lab whose owner died and checks that its
// namespace goes, while a live lab's namespaces stay.
func TestCleanupStale(t *testing.T) {
	Require(t)
	live, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	prefix, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ownerFile(prefix), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("ip", "netns", "add", prefix+"crashed"); err != nil {
		t.Fatal(err)
	}
	// And an /etc/netns dir whose namespace is already gone.
	if err := writeEtc(prefix + "gone"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamespace(prefix + "crashed"); removeEtc(prefix + "gone"); removeOwner(prefix) })
	if err := CleanupStale(t); err != nil {
		t.Fatal(err)
	}
	names, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, prefix+"crashed") {
		t.Errorf("stale namespace %scrashed was not removed", prefix)
	}
	if !slices.Contains(names, live.Prefix+"internet") {
		t.Errorf("live lab's namespace %sinternet was removed", live.Prefix)
	}
	if fileExists(etcDir(prefix+"gone")) || fileExists(etcDir(prefix+"crashed")) {
		t.Errorf("stale %s dirs were not removed", etcNetns)
	}
	if !fileExists(etcDir(live.Prefix + "internet")) {
		t.Errorf("live lab's %s was removed", etcDir(live.Prefix+"internet"))
	}
}

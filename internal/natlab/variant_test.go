package natlab

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestRouterVariants shows what the two router variants differ in: a
// packet from A reaches the site's public port 40000 before the host has
// sent to A. With the input firewall (InputDrop) it leaves no trace, and the
// host's own flow to A keeps port 40000; without it (InputAccept) the
// router confirms a conntrack entry for it, and the host's flow to A
// clashes with it and leaves from another port.
func TestRouterVariants(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	a := mustPublic(t, lab, "a", "203.0.113.20")
	for _, kind := range []Kind{RestrictedCone, PortRestricted, DoubleNAT} {
		for _, v := range Variants {
			name := kind.String() + "-" + v.String()
			site, err := lab.AddSiteSpec(name, SiteSpec{Kind: kind, Variant: v})
			if err != nil {
				t.Fatal(err)
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				// One port of A per site: the stale entry is per A:port.
				aPort := 3490 + 2*site.index
				if _, err := a.Run(ctx, "env", toolArgs(t, "probe", "-bind", fmt.Sprintf("0.0.0.0:%d", aPort),
					"-to", fmt.Sprintf("%s:40000", site.PublicIP()))...); err != nil {
					t.Fatal(err)
				}
				echo, err := a.Start("env", toolArgs(t, "echo", "-listen", fmt.Sprintf(":%d", aPort))...)
				if err != nil {
					t.Fatal(err)
				}
				if err := echo.WaitLog("listening", 10*time.Second); err != nil {
					t.Fatal(err)
				}
				server := fmt.Sprintf("203.0.113.20:%d", aPort)
				out, err := site.Host.Run(ctx, "env", toolArgs(t, "client", "-bind", "0.0.0.0:40000",
					"-echo", server, "-listen", "100ms")...)
				if err != nil {
					t.Fatal(err)
				}
				seen := parseMappedN(t, out, 1)[server]
				moved := seen.Port() != 40000
				t.Logf("%s: after an unsolicited packet from A, the host's flow to A is mapped to %v", name, seen)
				if want := v == InputAccept; moved != want {
					t.Errorf("mapping %v moved from port 40000 = %v, want %v", seen, moved, want)
				}
			})
		}
	}
}

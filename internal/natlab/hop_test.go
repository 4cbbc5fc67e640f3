package natlab

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestISPHop checks a site behind an ISP hop: its hosts reach public hosts
// added before and after the site (every bridge namespace routes the hop's
// prefix), the site's NAT address is the router's 198.18.N.2, and a packet
// sent with TTL 2 dies at the hop while TTL 3 gets through - the property
// low-TTL hole punching relies on.
func TestISPHop(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	before := mustPublic(t, lab, "before", "203.0.113.20")
	site, err := lab.AddSiteSpec("hopped", SiteSpec{Kind: PortRestricted, Variant: InputAccept, ISPHop: true})
	if err != nil {
		t.Fatal(err)
	}
	after := mustPublic(t, lab, "after", "198.51.100.21")
	if site.ISP == nil || site.PublicIP().String() != "198.18.1.2" {
		t.Fatalf("hop %v, public IP %v; want a hop and 198.18.1.2", site.ISP, site.PublicIP())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ping := func(to *Host, ttl int) error {
		_, err := site.Host.Run(ctx, "ping", "-n", "-c", "1", "-W", "1", "-t", strconv.Itoa(ttl), to.IP.String())
		return err
	}
	for _, h := range []*Host{before, after} {
		if err := ping(h, 64); err != nil {
			t.Errorf("ping %s from behind the hop: %v", h.Name, err)
		}
		if err := ping(h, 3); err != nil {
			t.Errorf("ping %s with TTL 3: %v", h.Name, err)
		}
		if err := ping(h, 2); err == nil {
			t.Errorf("ping %s with TTL 2 got through; want it to die at the ISP hop", h.Name)
		}
	}
	// A peer reaches the site's public address through the hop.
	if _, err := after.Run(ctx, "ping", "-n", "-c", "1", "-W", "1", site.PublicIP().String()); err != nil {
		t.Errorf("ping the site's router from a public host: %v", err)
	}
}

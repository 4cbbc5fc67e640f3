package portmap

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestPCPPreferredMapRenewClose(t *testing.T) {
	f := newFakePMP(t)
	c := NewClient(f.config())
	m, err := c.Map(t.Context(), 41641)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != PCP || m.External != netip.MustParseAddrPort("203.0.113.7:40001") || m.InternalPort != 41641 || m.Lease != DefaultLease {
		t.Fatalf("mapping = %+v", m)
	}
	// Not due and no reboot: nothing changes.
	if m2, err := c.Refresh(t.Context()); err != nil || m2 != m {
		t.Fatalf("refresh = %+v, %v; want unchanged", m2, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakePMP) {
		if f.deletes != 1 || len(f.mapped) != 0 {
			t.Errorf("after Close: %d deletes, mapped %v", f.deletes, f.mapped)
		}
	})
	if _, ok := c.Current(); ok {
		t.Error("Current after Close still has a mapping")
	}
}

func TestNATPMPOnly(t *testing.T) {
	f := newFakePMP(t)
	f.set(func(f *fakePMP) { f.pcp = false })
	res, err := Probe(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	if res.PCP || !res.NATPMP || res.UPnP || res.External != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("probe = %+v", res)
	}
	c := NewClient(f.config())
	m, err := c.Map(t.Context(), 5000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != NATPMP || m.External.Port() != 40001 {
		t.Fatalf("mapping = %+v", m)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// A gateway whose epoch goes back rebooted and lost the mapping: Refresh maps
// again, asking for the same external port.
func TestEpochResetRemaps(t *testing.T) {
	for _, proto := range []Protocol{PCP, NATPMP} {
		t.Run(string(proto), func(t *testing.T) {
			f := newFakePMP(t)
			if proto == NATPMP {
				f.set(func(f *fakePMP) { f.pcp = false })
			}
			c := NewClient(f.config())
			m, err := c.Map(t.Context(), 6000)
			if err != nil {
				t.Fatal(err)
			}
			f.set(func(f *fakePMP) { f.epoch = 3; f.mapped = map[uint16]uint16{}; f.nextPort = 50000 })
			m2, err := c.Refresh(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if m2.External != m.External || !m2.Obtained.After(m.Obtained) {
				t.Fatalf("after reboot: %+v, want same external %v and a new grant", m2, m.External)
			}
			f.set(func(f *fakePMP) {
				if f.mapped[6000] != m.External.Port() {
					t.Errorf("gateway has %v, want 6000 -> %d again", f.mapped, m.External.Port())
				}
			})
		})
	}
}

func TestEpochObserve(t *testing.T) {
	var ep epoch
	t0 := time.Unix(1000, 0)
	if ep.observe(100, t0) {
		t.Fatal("first observation is never a reset")
	}
	if ep.observe(160, t0.Add(60*time.Second)) {
		t.Fatal("epoch advancing with the clock is no reset")
	}
	if !ep.observe(20, t0.Add(120*time.Second)) {
		t.Fatal("epoch going back is a reset")
	}
	if !ep.observe(25, t0.Add(220*time.Second)) {
		t.Fatal("epoch advancing far slower than the clock is a reset")
	}
}

// Bad routers: an error and no mapping, quickly, never a panic.
func TestBadGateways(t *testing.T) {
	cases := []struct {
		name string
		set  func(f *fakePMP)
		want string
	}{
		{"garbage", func(f *fakePMP) { f.garbage = []byte("HTTP/1.1 200 OK\r\n\r\nhello there, not NAT-PMP") }, "no port-mapping gateway"},
		{"short", func(f *fakePMP) { f.garbage = []byte{0, 128, 0} }, "no port-mapping gateway"},
		{"silent", func(f *fakePMP) { f.silent = true }, "no port-mapping gateway"},
		{"double NAT", func(f *fakePMP) { f.external = netip.MustParseAddr("192.168.0.2") }, "double NAT"},
		{"CGNAT", func(f *fakePMP) { f.external = netip.MustParseAddr("100.70.1.2") }, "double NAT"},
		{"no address", func(f *fakePMP) { f.external = netip.IPv4Unspecified() }, "external address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePMP(t)
			f.set(tc.set)
			c := NewClient(f.config())
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			m, err := c.Map(ctx, 7000)
			if err == nil {
				t.Fatalf("mapping %+v from a bad gateway", m)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if _, ok := c.Current(); ok {
				t.Error("a mapping is offered after the error")
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

func TestProbeNothing(t *testing.T) {
	f := newFakePMP(t)
	f.set(func(f *fakePMP) { f.silent = true })
	cfg := f.config()
	start := time.Now()
	res, err := Probe(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Any() || res.Errors[PCP] == "" || res.Errors[NATPMP] == "" || res.Errors[UPnP] != "disabled" {
		t.Fatalf("probe of a silent gateway = %+v", res)
	}
	// The budget is 250 ms; allow for a loaded machine.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("probe took %v", took)
	}
}

func TestCheckExternal(t *testing.T) {
	for ip, ok := range map[string]bool{
		"203.0.113.101": true, "8.8.8.8": true, "198.51.100.3": true,
		"10.0.0.1": false, "172.16.3.4": false, "192.168.1.1": false, "100.64.0.1": false,
		"127.0.0.1": false, "169.254.1.1": false, "0.0.0.0": false, "224.0.0.1": false, "::1": false,
	} {
		if err := checkExternal(netip.MustParseAddr(ip)); (err == nil) != ok {
			t.Errorf("checkExternal(%s) = %v, want ok=%v", ip, err, ok)
		}
	}
}

func TestIsAnnouncement(t *testing.T) {
	gw := netip.MustParseAddrPort("10.1.0.1:5351")
	pmp := []byte{0, 128, 0, 0, 0, 0, 0, 5, 203, 0, 113, 7}
	pcp := make([]byte, 24)
	pcp[0], pcp[1] = 2, 0x80
	if !isAnnouncement(pmp, gw, gw) || !isAnnouncement(pcp, gw, gw) {
		t.Fatal("gateway announcements not recognised")
	}
	if isAnnouncement(pmp, netip.MustParseAddrPort("10.1.0.66:5351"), gw) {
		t.Error("announcement from another host accepted")
	}
	if isAnnouncement(pmp, netip.MustParseAddrPort("10.1.0.1:40000"), gw) {
		t.Error("announcement from another port of the gateway accepted")
	}
	if isAnnouncement(pmp, gw, netip.AddrPort{}) {
		t.Error("announcement accepted with no gateway known")
	}
	for _, bad := range [][]byte{{0, 0}, {0, 129, 0, 0, 0, 0, 0, 5}, pcp[:20], []byte("NOTIFY * HTTP/1.1\r\n\r\n")} {
		if isAnnouncement(bad, gw, gw) {
			t.Errorf("% x taken for an announcement", bad)
		}
	}
}

// A gateway that stops answering: the mapping stays offered while its lease
// runs, and is dropped once it has expired.
func TestRenewalFailure(t *testing.T) {
	f := newFakePMP(t)
	c := NewClient(f.config())
	m, err := c.Map(t.Context(), 8000)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakePMP) { f.silent = true })
	// Due for renewal (past half-life), not yet expired.
	c.mu.Lock()
	c.cur.Obtained = time.Now().Add(-(DefaultLease/2 + time.Minute))
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := c.Refresh(ctx)
	if err == nil || got.External != m.External {
		t.Fatalf("refresh with a silent gateway = %+v, %v; want the old mapping and an error", got, err)
	}
	if _, ok := c.Current(); !ok {
		t.Fatal("mapping dropped before its lease ran out")
	}
	c.mu.Lock()
	c.cur.Obtained = time.Now().Add(-DefaultLease - time.Minute)
	c.mu.Unlock()
	if got, err := c.Refresh(ctx); err == nil {
		t.Fatalf("refresh of an expired mapping with a silent gateway = %+v", got)
	}
	if _, ok := c.Current(); ok {
		t.Fatal("expired mapping still offered")
	}
}

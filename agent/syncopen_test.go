package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/netcheck"
)

// TestClockSample: offset and round trip of one ping, read on two clocks
// whose offset is known.
func TestClockSample(t *testing.T) {
	const offset = 1500 * time.Millisecond // the peer's clock runs ahead
	sent := int64(1_000_000_000)
	// 10 ms out, 30 ms back: the offset estimate is off by half the
	// difference, 10 ms, within half the round trip.
	s := clockSample{sent: sent, peer: sent + int64(10*time.Millisecond+offset), recv: sent + int64(40*time.Millisecond)}
	if s.rtt() != 40*time.Millisecond {
		t.Errorf("rtt %v, want 40ms", s.rtt())
	}
	if got, want := s.offset(), offset-10*time.Millisecond; got != want {
		t.Errorf("offset %v, want %v", got, want)
	}
	sym := clockSample{sent: sent, peer: sent + int64(20*time.Millisecond+offset), recv: sent + int64(40*time.Millisecond)}
	if sym.offset() != offset {
		t.Errorf("symmetric legs: offset %v, want %v", sym.offset(), offset)
	}
}

// TestBestSample keeps the shortest round trip and skips a sample whose
// answer came "before" its ping (a clock step).
func TestBestSample(t *testing.T) {
	if _, ok := bestSample(nil); ok {
		t.Error("no samples: ok")
	}
	samples := []clockSample{
		{sent: 0, peer: 30, recv: 50},
		{sent: 100, peer: 105, recv: 110}, // best: 10
		{sent: 200, peer: 250, recv: 190}, // negative
		{sent: 300, peer: 320, recv: 340},
	}
	best, ok := bestSample(samples)
	if !ok || best.sent != 100 {
		t.Errorf("best %+v ok=%v, want the sample sent at 100", best, ok)
	}
}

// TestPlanFire: the controlling side's instant and the peer's, which is
// the same instant read on the peer's clock; the lead grows with a slow
// signalling path and stays below what a peer accepts.
func TestPlanFire(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const offset = -3 * time.Second
	for _, tc := range []struct {
		rtt, lead time.Duration
	}{
		{20 * time.Millisecond, syncLead},
		{150 * time.Millisecond, 600 * time.Millisecond},
		{450 * time.Millisecond, 1800 * time.Millisecond},
		{500 * time.Millisecond, 0}, // too slow: no open
	} {
		s := clockSample{sent: now.UnixNano() - int64(tc.rtt), recv: now.UnixNano()}
		s.peer = (s.sent+s.recv)/2 + int64(offset)
		self, peerAt, ok := planFire(now, s)
		if ok != (tc.lead > 0) {
			t.Errorf("rtt %v: ok %v", tc.rtt, ok)
		}
		if !ok {
			continue
		}
		if self.Sub(now) != tc.lead {
			t.Errorf("rtt %v: lead %v, want %v", tc.rtt, self.Sub(now), tc.lead)
		}
		if got := time.Duration(peerAt - self.UnixNano()); got != offset {
			t.Errorf("rtt %v: peer's instant is %v from ours on its clock, want the offset %v", tc.rtt, got, offset)
		}
		// The peer, reading peerAt on its clock, gets a deadline within
		// its bounds.
		peerNow := now.Add(offset + tc.rtt/2)
		d, err := fireDeadline(peerNow, peerAt)
		if err != nil {
			t.Errorf("rtt %v: peer refuses the instant: %v", tc.rtt, err)
		}
		if d.Sub(peerNow) != tc.lead-tc.rtt/2 {
			t.Errorf("rtt %v: the peer waits %v, want %v", tc.rtt, d.Sub(peerNow), tc.lead-tc.rtt/2)
		}
	}
}

// TestFireDeadline: a late fire time opens at once, one too far ahead is
// refused (a peer cannot park our checks).
func TestFireDeadline(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	if d, err := fireDeadline(now, now.Add(300*time.Millisecond).UnixNano()); err != nil || d.Sub(now) != 300*time.Millisecond {
		t.Errorf("300 ms ahead: %v, %v", d.Sub(now), err)
	}
	if d, err := fireDeadline(now, now.Add(-5*time.Millisecond).UnixNano()); err != errFireLate || !d.Equal(now) {
		t.Errorf("5 ms late: %v, %v; want now and errFireLate", d.Sub(now), err)
	}
	if _, err := fireDeadline(now, now.Add(syncMaxLead+time.Millisecond).UnixNano()); err != errFireFar {
		t.Errorf("past syncMaxLead: %v, want errFireFar", err)
	}
}

// TestOpenSkew recovers the skew and the latency from the two arrival
// delays, each read on its own side's clock.
func TestOpenSkew(t *testing.T) {
	const latency = 12 * time.Millisecond
	for _, skew := range []time.Duration{0, 300 * time.Microsecond, -4 * time.Millisecond} {
		// We send at T, the peer at T+skew.
		rSelf := latency + skew // the peer's packet reaches us at T+skew+L
		rPeer := latency - skew // ours reaches the peer at T+L, it sent at T+skew
		gotSkew, gotLat := openSkew(rSelf, rPeer)
		if gotSkew != skew || gotLat != latency {
			t.Errorf("skew %v: got skew %v, latency %v; want %v, %v", skew, gotSkew, gotLat, skew, latency)
		}
	}
}

// TestSyncPair: which pairs of NAT kinds meet by a synchronized open:
// exactly the two that filter by address and port, neither symmetric nor
// port-mapped, with no low-TTL opening on either side (that order comes
// first), when both take part; and both sides agree.
func TestSyncPair(t *testing.T) {
	apdf := netcheck.AddrPortDependent
	kinds := []struct {
		name string
		view natView
		sync bool // can take part in a synchronized open
	}{
		{"fullcone", natView{Filtering: netcheck.EndpointIndependent, SyncOpen: true}, false},
		{"restrictedcone", natView{Filtering: netcheck.AddressDependent, SyncOpen: true}, false},
		{"portrestricted", natView{Filtering: apdf, SyncOpen: true}, true},
		{"doublenat", natView{Filtering: apdf, SyncOpen: true}, true},
		{"portrestricted, old agent", natView{Filtering: apdf}, false},
		{"symmetric", natView{Filtering: apdf, Symmetric: true, SyncOpen: true}, false},
		{"symmetric+portmap", natView{Filtering: apdf, Symmetric: true, PortMapped: true, SyncOpen: true}, false},
		{"portrestricted+portmap", natView{Filtering: apdf, PortMapped: true, SyncOpen: true}, false},
		{"portrestricted behind an ISP hop", natView{Filtering: apdf, OpenTTL: 2, SyncOpen: true}, false},
		{"udpblocked", natView{Filtering: netcheck.Unknown, SyncOpen: true}, false},
		{"not probed yet", natView{SyncOpen: true}, false},
	}
	for _, a := range kinds {
		for _, b := range kinds {
			ab, ba := decideOrder(a.view, b.view, true), decideOrder(b.view, a.view, false)
			want := a.sync && b.sync
			if (ab == orderSync) != want {
				t.Errorf("%s vs %s: %v, want synchronized open %v", a.name, b.name, ab, want)
			}
			if (ab == orderSync) != (ba == orderSync) {
				t.Errorf("%s vs %s: the sides disagree: %v and %v", a.name, b.name, ab, ba)
			}
		}
	}
}

// TestSyncPacket: the opening packet round-trips, classify tells it from
// WireGuard, STUN and birthday packets, and a wrong length or type is not
// taken.
func TestSyncPacket(t *testing.T) {
	tok, ok := syncToken("0123456789abcdef")
	if !ok {
		t.Fatal("session id not taken as a token")
	}
	p := syncPacket(tok)
	if classify(p) != kindSync {
		t.Fatalf("classify: %v", classify(p))
	}
	if got, ok := parseSyncPacket(p); !ok || got != tok {
		t.Fatalf("parse: %x %v", got, ok)
	}
	if _, ok := parseSyncPacket(append(p, 0)); ok {
		t.Error("long packet taken")
	}
	bad := append([]byte(nil), p...)
	bad[3] = 'x'
	if _, ok := parseSyncPacket(bad); ok {
		t.Error("unknown type taken")
	}
	if _, ok := syncToken("xyz"); ok {
		t.Error("bad session id taken")
	}
	var r syncArrivals
	r.deliver(p, netip.MustParseAddrPort("203.0.113.5:4000")) // not expected: dropped
	if _, _, ok := r.arrival(tok); ok {
		t.Error("arrival noted for an open nobody waits for")
	}
	r.expect(tok)
	from := netip.MustParseAddrPort("203.0.113.5:4000")
	r.deliver(p, from)
	r.deliver(p, netip.MustParseAddrPort("203.0.113.5:4001"))
	if _, got, ok := r.arrival(tok); !ok || got != from {
		t.Errorf("arrival from %v ok=%v, want the first one from %v", got, ok, from)
	}
	r.forget(tok)
	if len(r.waiting) != 0 {
		t.Error("forget left the entry")
	}
}

// FuzzParseSyncPacket: any datagram parses or not without a panic, and
// what parses rebuilds to itself.
func FuzzParseSyncPacket(f *testing.F) {
	f.Add(syncPacket(bdayToken{1, 2, 3}))
	f.Add([]byte("mvso"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, ok := parseSyncPacket(b)
		if ok && string(syncPacket(tok)) != string(b) {
			t.Fatalf("%x parsed to %x", b, tok)
		}
	})
}

// TestNATsTooClose: a signalling round trip under syncMinRTT skips the
// open (the flat lab bridge: 0.2-2 ms measured), one with a few
// milliseconds between each NAT and the coordinator does not (22-38 ms
// measured with 5-10 ms per site).
func TestNATsTooClose(t *testing.T) {
	for _, tc := range []struct {
		rtt  time.Duration
		skip bool
	}{
		{200 * time.Microsecond, true},
		{2 * time.Millisecond, true},
		{4 * time.Millisecond, false},
		{25 * time.Millisecond, false},
	} {
		s := clockSample{sent: 0, recv: int64(tc.rtt)}
		if natsTooClose(s) != tc.skip {
			t.Errorf("signalling rtt %v: skip %v, want %v", tc.rtt, !tc.skip, tc.skip)
		}
	}
}

// TestSyncLastChangeOnce: the open names only the first path change of
// its session (the direct path coming up), also when the direct lane was
// already the active one (the peer restarted); a later move in the same
// session is not the open's.
func TestSyncLastChangeOnce(t *testing.T) {
	p := &peer{}
	p.direct.session = "0123456789abcdef"
	p.sync = syncState{session: p.direct.session, fired: time.Now().Add(-300 * time.Millisecond)}
	p.changedAt = time.Now()
	if got := p.syncLastChangeLocked(); !strings.HasPrefix(got, "direct after synchronized open: 0.3 s") {
		t.Fatalf("first change after the open: %q", got)
	}
	if got := p.syncLastChangeLocked(); got != "" {
		t.Errorf("second change in the session: %q, want none", got)
	}
}

package agent

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/netcheck"
)

// TestDecideBirthday checks the role decision for every pair of NAT
// kinds the agent can tell apart, from both sides: the two sides must
// agree (one sprays, the other probes, or neither), and only a symmetric
// side with an open TTL and a port-restricted peer that both take part
// punch.
func TestDecideBirthday(t *testing.T) {
	const apd, ad, ei = netcheck.AddrPortDependent, netcheck.AddressDependent, netcheck.EndpointIndependent
	kinds := map[string]bdayView{
		"fullcone":           {Filtering: ei, Capable: true},
		"restrictedcone":     {Filtering: ad, Capable: true},
		"portrestricted":     {Filtering: apd, Capable: true},
		"doublenat":          {Filtering: apd, OpenTTL: 3, Capable: true},
		"portrestricted-hop": {Filtering: apd, OpenTTL: 2, Capable: true},
		"symmetric":          {NAT: natSymmetric, Filtering: apd, Capable: true},
		"symmetric-hop":      {NAT: natSymmetric, Filtering: apd, OpenTTL: 2, Capable: true},
		"symmetric-hop-old":  {NAT: natSymmetric, Filtering: apd, OpenTTL: 2},
		"portmapped":         {NAT: natPortMapped, Filtering: apd, Capable: true},
		"udpblocked":         {NAT: natUDPBlocked, Capable: true},
		"unknown":            {Capable: true},
	}
	punch := map[[2]string]bool{
		{"symmetric-hop", "portrestricted"}:     true,
		{"symmetric-hop", "doublenat"}:          true,
		{"symmetric-hop", "portrestricted-hop"}: true,
	}
	for an, a := range kinds {
		for bn, b := range kinds {
			// As each side sees it (an older agent, not Capable, has no
			// part at all).
			ra, _ := decideBirthday(a, b)
			rb, _ := decideBirthday(b, a)
			want := punch[[2]string{an, bn}] || punch[[2]string{bn, an}]
			got := ra != bdayNone
			if got != want || (rb != bdayNone) != want {
				t.Errorf("%s <-> %s: roles %s/%s, want punching %v", an, bn, ra, rb, want)
				continue
			}
			if want && !((ra == bdaySpray && rb == bdayProbe) || (ra == bdayProbe && rb == bdaySpray)) {
				t.Errorf("%s <-> %s: roles %s/%s, want one spray and one probe", an, bn, ra, rb)
			}
			if want && (ra == bdaySpray) != (a.NAT == natSymmetric) {
				t.Errorf("%s <-> %s: %s got role %s", an, bn, an, ra)
			}
		}
	}
	// Why no attempt, for status.
	for _, c := range []struct {
		self, peer string
		why        string
	}{
		{"portrestricted", "symmetric", "no router between the symmetric NAT"},
		{"symmetric", "portrestricted", "no router between the symmetric NAT"},
		{"portrestricted", "symmetric-hop-old", "does not take part"},
		{"symmetric", "symmetric-hop", ""},
		{"fullcone", "symmetric", ""},
	} {
		_, why := decideBirthday(kinds[c.self], kinds[c.peer])
		if (c.why == "") != (why == "") || !strings.Contains(why, c.why) {
			t.Errorf("%s -> %s: why %q, want one containing %q", c.self, c.peer, why, c.why)
		}
	}
}

func TestBdayPacket(t *testing.T) {
	tok := bdayToken{1, 2, 3, 4, 5, 6, 7, 8}
	for _, typ := range []byte{bdayProbeType, bdayReplyType} {
		p := bdayPacket(typ, tok)
		gt, gtok, ok := parseBdayPacket(p)
		if !ok || gt != typ || gtok != tok {
			t.Errorf("round trip of %c: %c %x %v", typ, gt, gtok, ok)
		}
		if classify(p) != kindBirthday {
			t.Errorf("classify(%q) = %d, want birthday", p, classify(p))
		}
	}
	for _, bad := range [][]byte{nil, []byte("mvbp"), []byte("mvbx12345678"), []byte("mvop"), append(bdayPacket('p', tok), 0)} {
		if _, _, ok := parseBdayPacket(bad); ok {
			t.Errorf("parse(%q) ok", bad)
		}
	}
	if thousands(1130) != "1,130" || thousands(20) != "20" || thousands(1234567) != "1,234,567" {
		t.Errorf("thousands: %s %s %s", thousands(1130), thousands(20), thousands(1234567))
	}
}

// TestBdayRepliesOnlyKnownTokens: a reply for a token no attempt waits
// for is dropped, and a probe never counts as a reply.
func TestBdayRepliesOnlyKnownTokens(t *testing.T) {
	var r bdayReplies
	tok := bdayToken{9}
	ch := r.expect(tok)
	from := netip.MustParseAddrPort("198.18.1.2:4000")
	r.deliver(bdayPacket(bdayReplyType, bdayToken{8}), from)
	r.deliver(bdayPacket(bdayProbeType, tok), from)
	select {
	case got := <-ch:
		t.Fatalf("got %s from a wrong token or a probe", got)
	default:
	}
	r.deliver(bdayPacket(bdayReplyType, tok), from)
	if got := <-ch; got != from {
		t.Fatalf("reply from %s, want %s", got, from)
	}
	r.forget(tok, ch)
	r.deliver(bdayPacket(bdayReplyType, tok), from) // must not block or panic
}

func FuzzParseBdayPacket(f *testing.F) {
	f.Add(bdayPacket(bdayProbeType, bdayToken{1}))
	f.Add([]byte("mvop"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, tok, ok := parseBdayPacket(b)
		if !ok {
			return
		}
		if !bytes.Equal(bdayPacket(typ, tok), b) {
			t.Fatalf("parse(%x) = %c %x, which does not build the same packet", b, typ, tok)
		}
		if classify(b) != kindBirthday {
			t.Fatalf("classify(%x) is not birthday", b)
		}
	})
}

func TestParseBdayToken(t *testing.T) {
	for _, bad := range []string{"", "zz", strings.Repeat("g", 16), strings.Repeat("a", 17)} {
		if _, err := parseBdayToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
	if _, err := parseBdayToken("0123456789abcdef"); err != nil {
		t.Error(err)
	}
}

// TestPunchStatus: status shows a running attempt, and nothing once it
// ended.
func TestPunchStatus(t *testing.T) {
	now := time.Now()
	bd := birthdayState{running: true, role: bdayProbe, phase: "probing", attempts: 2,
		started: now.Add(-400 * time.Millisecond), target: netip.MustParseAddrPort("198.18.3.2:4000"), probes: new(atomic.Int64)}
	bd.probes.Store(812)
	if got, want := bd.punchStatus(now), "birthday punch 2: probing ports of 198.18.3.2, 0.4 s, 812 probes"; got != want {
		t.Errorf("probing: %q, want %q", got, want)
	}
	bd.phase = "asking"
	if got := bd.punchStatus(now); !strings.Contains(got, "asking the peer") {
		t.Errorf("asking: %q", got)
	}
	bd = birthdayState{running: true, role: bdaySpray, phase: "spraying", sockets: 256,
		started: now.Add(-time.Second), target: netip.MustParseAddrPort("203.0.113.105:4000"), probes: new(atomic.Int64)}
	if got, want := bd.punchStatus(now), "birthday punch: 256 sockets open toward 203.0.113.105:4000, 1.0 s"; got != want {
		t.Errorf("spraying: %q, want %q", got, want)
	}
	bd.running = false
	if got := bd.punchStatus(now); got != "" {
		t.Errorf("ended: %q, want none", got)
	}
}

// TestMappingMoved: an attempt is given up when a mapping query after the
// ask saw our new flows leave from another port, and retried at once only
// birthdayQuickRetries times in a row.
func TestMappingMoved(t *testing.T) {
	b := NewBind()
	p := &peer{a: &Agent{bind: b}, log: slog.New(slog.DiscardHandler)}
	asked := netip.MustParseAddrPort("203.0.113.106:55295")
	p.bd = birthdayState{running: true, role: bdayProbe, askedFrom: asked, askedAt: time.Now(), probes: new(atomic.Int64)}
	if p.mappingMovedLocked() {
		t.Fatal("moved before any query")
	}
	b.mapped, b.mappedAt = netip.MustParseAddrPort("203.0.113.106:55042"), p.bd.askedAt.Add(-time.Second)
	if p.mappingMovedLocked() {
		t.Fatal("a query from before the ask counts")
	}
	b.mapped, b.mappedAt = asked, time.Now().Add(time.Millisecond)
	if p.mappingMovedLocked() {
		t.Fatal("the same mapping counts as moved")
	}
	b.mappedAt, b.mapped = time.Now().Add(time.Millisecond), netip.MustParseAddrPort("203.0.113.106:55042")
	if !p.mappingMovedLocked() {
		t.Fatal("a moved mapping is not seen")
	}
	for i := range birthdayQuickRetries + 1 {
		p.bd.running = true
		p.birthdayRetryNowLocked("moved")
		quick := !p.bd.next.After(time.Now())
		if want := i < birthdayQuickRetries; quick != want {
			t.Errorf("retry %d: at once %v, want %v", i+1, quick, want)
		}
	}
}

// A member chooses its own candidates. Birthday probes go only to a
// public address the peer signalled that is also where the coordinator
// sees its stream come from: a member that names a stranger's address
// cannot aim this agent's probes at the stranger.
func TestBirthdayProbesOnlyWhereCoordinatorSeesPeer(t *testing.T) {
	stranger := netip.MustParseAddrPort("198.51.100.77:4000")
	own := netip.MustParseAddrPort("203.0.113.105:41000")
	p := &peer{a: &Agent{}, log: slog.New(slog.DiscardHandler)}
	p.notePublicLocked(own)
	p.notePublicLocked(stranger) // the newest claim

	p.node.SeenFrom = ""
	if ap, ok := p.probeTargetLocked(); ok {
		t.Errorf("no address seen by the coordinator: probe target %s, want none", ap)
	}
	p.node.SeenFrom = own.Addr().String()
	if ap, ok := p.probeTargetLocked(); !ok || ap != own {
		t.Errorf("probe target %s %v, want %s (the claim the coordinator confirms), never %s", ap, ok, own, stranger)
	}
	if p.peerPublicIPLocked(stranger.Addr()) {
		t.Errorf("%s counted as the peer's own address", stranger.Addr())
	}
	p.node.SeenFrom = "198.51.100.1"
	if ap, ok := p.probeTargetLocked(); ok {
		t.Errorf("coordinator sees the peer elsewhere: probe target %s, want none", ap)
	}
}

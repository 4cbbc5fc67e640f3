package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// A simultaneous open, with raw UDP sockets and no project code: two
// hosts behind port-restricted routers without an input firewall each
// send to the other's public address and port (Linux masquerade keeps the
// port) at an agreed instant, the second one skew later, and keep sending
// every simOpenEvery for simOpenFor. The pair is joined when each side
// receives the other's packets from the expected public address and port.
// It fails when the first packet reaches the peer's router before the
// peer's own first packet has left it: the router then confirms a
// conntrack entry for itself, and the peer's mapping moves to another
// port (LAB-NOTES.md, "Routers without an input firewall").
const (
	simOpenEvery = 20 * time.Millisecond
	simOpenFor   = 600 * time.Millisecond
)

// simOpenResult is one trial: what each side received, and the skew the
// two first sends really had.
type simOpenResult struct {
	a, b     string // "ok", "moved" (from the peer's address, another port) or "none"
	realSkew time.Duration
}

func (r simOpenResult) joined() bool { return r.a == "ok" && r.b == "ok" }

// simOpenSide is one host of a trial: its socket, its public address and
// port, and what it received.
type simOpenSide struct {
	conn   *net.UDPConn
	public netip.AddrPort
	first  time.Time // first send
	got    string
}

// simOpenTrial runs one trial between the hosts of sites sa and sb, on
// port (fresh per trial), b starting skew after a.
func simOpenTrial(t *testing.T, sa, sb *natlab.Site, port int, skew time.Duration) simOpenResult {
	t.Helper()
	flushConntrack(t, []*natlab.Host{sa.Router, sa.Carrier, sb.Router, sb.Carrier})
	sides := [2]*simOpenSide{}
	for i, s := range []*natlab.Site{sa, sb} {
		side := &simOpenSide{public: netip.AddrPortFrom(s.PublicIP(), uint16(port)), got: "none"}
		err := s.Host.Do(func() (err error) {
			side.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(s.Host.IP.AsSlice()), Port: port})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer side.conn.Close()
		sides[i] = side
	}
	start := time.Now().Add(50 * time.Millisecond)
	var wg sync.WaitGroup
	for i, side := range sides {
		peer := sides[1-i]
		at := start
		if i == 1 {
			at = start.Add(skew)
		}
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			time.Sleep(time.Until(at))
			side.first = time.Now()
			to := net.UDPAddrFromAddrPort(peer.public)
			for n := 0; n < int(simOpenFor/simOpenEvery); n++ {
				if _, err := side.conn.WriteToUDP([]byte("simopen"), to); err != nil {
					return
				}
				time.Sleep(simOpenEvery)
			}
		}()
		go func() { // receiver: the first packet from the peer's address decides
			defer wg.Done()
			side.conn.SetReadDeadline(start.Add(skew + simOpenFor + 200*time.Millisecond))
			buf := make([]byte, 64)
			for {
				_, from, err := side.conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				switch {
				case from == peer.public:
					side.got = "ok"
					return
				case from.Addr() == peer.public.Addr():
					side.got = "moved"
				}
			}
		}()
	}
	wg.Wait()
	return simOpenResult{a: sides[0].got, b: sides[1].got, realSkew: sides[1].first.Sub(sides[0].first)}
}

// TestSimultaneousOpenLatency measures whether a simultaneous open joins
// two port-restricted sites whose routers accept input (the known gap of
// TestMeshAllNATPairs), by the latency between the two NATs (each site's
// WANDelay, so 2×WANDelay one way) and the skew between the two first
// sends. It logs a table; it asserts only the two claims the measurement
// is about, for every pair with latency between its NATs (input accept),
// judged by the skew the first sends really had (a busy machine wakes a
// sender late): a trial whose skew was under half the latency joins, and
// (between two single port-restricted routers) one whose skew was over
// twice the latency does not.
// SIMOPEN_TRIALS sets the trials per row (default 5).
func TestSimultaneousOpenLatency(t *testing.T) {
	natlab.Require(t)
	lab, err := natlab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	trials := 5
	if s := os.Getenv("SIMOPEN_TRIALS"); s != "" {
		if _, err := fmt.Sscan(s, &trials); err != nil || trials < 1 || trials > 100 {
			t.Fatalf("SIMOPEN_TRIALS=%q: want 1-100", s)
		}
	}
	type pair struct {
		name   string
		a, b   *natlab.Site
		oneWay time.Duration
	}
	mk := func(name string, kind natlab.Kind, v natlab.Variant, wan time.Duration) *natlab.Site {
		s, err := lab.AddSiteSpec(name, natlab.SiteSpec{Kind: kind, Variant: v, WANDelay: wan})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	acc, drop := natlab.InputAccept, natlab.InputDrop
	pr := natlab.PortRestricted
	pairs := map[string]pair{
		"flat":     {"port-restricted ↔ port-restricted, flat bridge", mk("fa", pr, acc, 0), mk("fb", pr, acc, 0), 0},
		"10ms":     {"port-restricted ↔ port-restricted, 10 ms", mk("da", pr, acc, 5*time.Millisecond), mk("db", pr, acc, 5*time.Millisecond), 10 * time.Millisecond},
		"dn10ms":   {"port-restricted ↔ double NAT, 10 ms", mk("na", pr, acc, 5*time.Millisecond), mk("nb", natlab.DoubleNAT, acc, 5*time.Millisecond), 10 * time.Millisecond},
		"2ms":      {"port-restricted ↔ port-restricted, 2 ms", mk("sa", pr, acc, time.Millisecond), mk("sb", pr, acc, time.Millisecond), 2 * time.Millisecond},
		"40ms":     {"port-restricted ↔ port-restricted, 40 ms", mk("la", pr, acc, 20*time.Millisecond), mk("lb", pr, acc, 20*time.Millisecond), 40 * time.Millisecond},
		"dropflat": {"port-restricted ↔ port-restricted, flat, input drop (control)", mk("ca", pr, drop, 0), mk("cb", pr, drop, 0), 0},
	}
	rows := []struct {
		pair string
		skew time.Duration
	}{
		{"flat", 0}, {"flat", time.Millisecond}, {"flat", 5 * time.Millisecond},
		{"10ms", 0}, {"10ms", 2 * time.Millisecond}, {"10ms", 5 * time.Millisecond}, {"10ms", 8 * time.Millisecond},
		{"10ms", 12 * time.Millisecond}, {"10ms", 25 * time.Millisecond}, {"10ms", 40 * time.Millisecond},
		{"2ms", 0}, {"2ms", time.Millisecond}, {"2ms", 4 * time.Millisecond},
		{"dn10ms", 0}, {"dn10ms", 5 * time.Millisecond}, {"dn10ms", 25 * time.Millisecond},
		{"40ms", 0}, {"40ms", 20 * time.Millisecond}, {"40ms", 35 * time.Millisecond}, {"40ms", 50 * time.Millisecond},
		{"dropflat", 0}, {"dropflat", 50 * time.Millisecond},
	}
	ctx := t.Context()
	port := 41000
	var table strings.Builder
	fmt.Fprintf(&table, "simultaneous open, %d trials per row (a sends at T, b at T+skew; b's side is the late one)\n", trials)
	fmt.Fprintf(&table, "%-66s %6s %8s  %s\n", "pair (one-way latency between the NATs)", "skew", "joined", "outcomes a/b (real skew of the first sends, ms)")
	// The rule the rows test: a trial joins exactly when the first sends
	// were closer together than the latency between the NATs.
	rule, ruleOf := 0, 0
	for _, r := range rows {
		p := pairs[r.pair]
		n := 0
		var outcomes []string
		for range trials {
			port++
			res := simOpenTrial(t, p.a, p.b, port, r.skew)
			if res.joined() {
				n++
			}
			if p.b.Variant == natlab.InputAccept {
				ruleOf++
				if res.joined() == (res.realSkew.Abs() < p.oneWay) {
					rule++
				}
				if p.oneWay > 0 {
					skew := res.realSkew.Abs()
					if skew < p.oneWay/2 && !res.joined() {
						t.Errorf("%s: first sends %v apart, under half the latency, did not join (%s/%s)", p.name, res.realSkew, res.a, res.b)
					}
					// Not asserted for the double NAT: 2 of its ~30 trials
					// beyond the latency joined (at 19.8 and 24.4 ms, with
					// 10 ms between the NATs), cause not found yet. Nor
					// below 10 ms of latency: the userspace delay box's own
					// jitter (a few ms on a loaded machine) let a 2 ms pair
					// join at 8.5 ms skew once.
					if skew > 2*p.oneWay && p.oneWay >= 10*time.Millisecond && res.joined() && p.b.Kind != natlab.DoubleNAT {
						t.Errorf("%s: first sends %v apart, over twice the latency, joined", p.name, res.realSkew)
					}
				}
			}
			outcomes = append(outcomes, fmt.Sprintf("%s/%s(%+.1f)", res.a, res.b, float64(res.realSkew)/float64(time.Millisecond)))
		}
		fmt.Fprintf(&table, "%-66s %6v %5d/%-2d  %s\n", p.name, r.skew, n, trials, strings.Join(outcomes, " "))
	}
	fmt.Fprintf(&table, "input-accept trials that joined exactly when |real skew| < one-way latency: %d of %d\n", rule, ruleOf)
	t.Log("\n" + table.String())
	if ctx.Err() != nil {
		t.Fatal(errors.New("test context ended"))
	}
}

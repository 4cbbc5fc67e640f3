package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// udpCounter counts what reaches a UDP port in a lab namespace, by kind:
// synchronized-open opening packets ("mvso" + token), STUN, and others.
type udpCounter struct {
	mu                   sync.Mutex
	opening, stun, other int
	from                 map[netip.Addr]int
}

func countUDP(t *testing.T, h *natlab.Host, addr string) *udpCounter {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := &udpCounter{from: map[netip.Addr]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			c.mu.Lock()
			switch {
			case n == 12 && bytes.HasPrefix(b, []byte("mvso")):
				c.opening++
			case n >= 20 && binary.BigEndian.Uint32(b[4:8]) == 0x2112A442:
				c.stun++
			default:
				c.other++
			}
			if ua, ok := from.(*net.UDPAddr); ok {
				c.from[ua.AddrPort().Addr().Unmap()]++
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *udpCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d opening, %d STUN, %d other, from %v", c.opening, c.stun, c.other, c.from)
}

func (c *udpCounter) openings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opening
}

// attackLab is a victim agent behind a port-restricted NAT that knows its
// filtering, a raw member (a client holding a valid key, on public host
// evil, 203.0.113.66) whose key sorts first, so it controls their ICE
// sessions, and a public host stranger (203.0.113.77) for listeners.
type attackLab struct {
	victim         *meshlab.Agent
	victimID       uint64
	evil, stranger *natlab.Host
	m              *rawMember
}

func newAttackLab(t *testing.T) *attackLab {
	t.Helper()
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	al := &attackLab{victim: addSiteAgent(t, lab, coord, "victim", natlab.PortRestricted)}
	startOnline(t, key, al.victim)
	// The victim decides a synchronized open only once it knows its NAT
	// filters by address and port.
	waitLog(t, al.victim, "filtering=address-and-port-dependent", 60*time.Second)
	st := status(t, al.victim)
	al.victimID = st.Self.ID
	var err error
	if al.evil, err = lab.AddPublicHost("evil", "203.0.113.66"); err != nil {
		t.Fatal(err)
	}
	if al.stranger, err = lab.AddPublicHost("stranger", "203.0.113.77"); err != nil {
		t.Fatal(err)
	}
	al.m = joinRaw(t, al.evil, key, smallerKey(t, st.Self.PublicKey))
	waitOnlinePeers(t, al.victim, 1)
	return al
}

// session returns a sender of the raw member's signals to the victim in a
// new session.
func (al *attackLab) session(t *testing.T) func(control.Signal) {
	var tok [8]byte
	rand.Read(tok[:])
	session := hex.EncodeToString(tok[:])
	return func(s control.Signal) {
		t.Helper()
		s.To, s.Session = al.victimID, session
		if err := al.m.signal(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
}

// waitOnlinePeers waits until a lists n peers online.
func waitOnlinePeers(t *testing.T, a *meshlab.Agent, n int) {
	t.Helper()
	ctx := t.Context()
	if err := natlab.Poll(ctx, 30*time.Second, 250*time.Millisecond, func() error {
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		if st.OnlinePeers() != n {
			return fmt.Errorf("%s sees %d online peers, want %d", a.Name, st.OnlinePeers(), n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSyncOpenThirdPartyCandidate: the raw member makes the victim the
// controlled side of a synchronized open and names two server-reflexive
// candidates: its own address and a stranger's (203.0.113.77:9999, with a
// UDP listener), then names the instant. The victim's opening packets must
// reach the member's own address (the open ran) and never the stranger: a
// member must not aim another member's packets at a third party.
func TestSyncOpenThirdPartyCandidate(t *testing.T) {
	al := newAttackLab(t)
	atStranger := countUDP(t, al.stranger, "0.0.0.0:9999")
	atMember := countUDP(t, al.evil, "0.0.0.0:40000")
	send := al.session(t)
	send(control.Signal{Kind: control.SignalOffer, Ufrag: "evilufragevilufr", Pwd: "evilpasswordevilpasswordevilpass",
		Filtering: "address-and-port-dependent", SyncOpen: true})
	send(control.Signal{Kind: control.SignalCandidate, Candidate: "candidate:1 1 udp 1694498815 203.0.113.66 40000 typ srflx raddr 203.0.113.66 rport 40000"})
	send(control.Signal{Kind: control.SignalCandidate, Candidate: "candidate:2 1 udp 1694498815 203.0.113.77 9999 typ srflx raddr 203.0.113.66 rport 40000"})
	send(control.Signal{Kind: control.SignalSyncFire, At: time.Now().Add(500 * time.Millisecond).UnixNano()})

	// The open fires in 0.5 s, its burst takes 20 ms; the victim's ICE
	// checks follow.
	if err := natlab.Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() error {
		if atMember.openings() < 1 {
			return fmt.Errorf("no opening packet at the member's own address yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("the victim made no synchronized open (%v); at the member: %v; at the stranger: %v", err, atMember, atStranger)
	}
	time.Sleep(2 * time.Second)
	t.Logf("at the member's own candidate 203.0.113.66:40000: %v", atMember)
	t.Logf("at the stranger's 203.0.113.77:9999: %v", atStranger)
	if n := atStranger.openings(); n != 0 {
		t.Errorf("the stranger got %d opening packets from the victim, want 0", n)
	}
}

// TestICEThirdPartyCandidatesBounded: the raw member names 32 ports of
// the stranger (203.0.113.77:9000-9031, each with a UDP listener) as its
// server-reflexive candidates, in 3 sessions 3 s apart. ICE checks every
// candidate it is given, so without a bound the victim sends the stranger
// STUN requests on all 32 ports (about 1,200 a second); a session takes at
// most maxForeignCandidates (4) addresses nothing vouches for.
func TestICEThirdPartyCandidatesBounded(t *testing.T) {
	const ports, maxForeign = 32, 4
	al := newAttackLab(t)
	var at []*udpCounter
	for i := range ports {
		at = append(at, countUDP(t, al.stranger, fmt.Sprintf("0.0.0.0:%d", 9000+i)))
	}
	start := time.Now()
	for range 3 {
		send := al.session(t)
		send(control.Signal{Kind: control.SignalOffer, Ufrag: "evilufragevilufr", Pwd: "evilpasswordevilpasswordevilpass"})
		for i := range ports {
			send(control.Signal{Kind: control.SignalCandidate,
				Candidate: fmt.Sprintf("candidate:%d 1 udp 1694498815 203.0.113.77 %d typ srflx raddr 203.0.113.66 rport 40000", i+1, 9000+i)})
		}
		time.Sleep(3 * time.Second)
	}
	took := time.Since(start)
	hit, total := 0, 0
	for _, c := range at {
		c.mu.Lock()
		if n := c.stun + c.opening + c.other; n > 0 {
			hit++
			total += n
		}
		c.mu.Unlock()
	}
	t.Logf("the stranger got %d packets on %d of %d ports in %v (%.0f a second)", total, hit, ports, took.Round(time.Millisecond), float64(total)/took.Seconds())
	// Each session may pick other ports among the 32.
	if hit > 3*maxForeign {
		t.Errorf("the victim checked %d of the stranger's ports, want at most %d (%d per session)", hit, 3*maxForeign, maxForeign)
	}
	if hit == 0 {
		t.Error("no check reached the stranger: the test shows nothing")
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// rawMember is a member of the mesh driven by the test itself: registered
// with an auth key, holding a raw stream from a lab host, sending whatever
// frames it likes (as an attacker with a valid key can).
type rawMember struct {
	hc *http.Client
	ws *websocket.Conn
	id uint64
}

// joinRaw registers pub with key from h and opens its stream. Frames the
// coordinator sends are read and thrown away, so the stream stays healthy.
func joinRaw(t *testing.T, h *natlab.Host, key, pub string) *rawMember {
	t.Helper()
	ctx := t.Context()
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: h.DialContext}}
	body, _ := json.Marshal(control.RegisterRequest{AuthKey: key, Hostname: "raw", PublicKey: pub})
	resp, err := hc.Post(meshlab.CoordinatorURL+control.PathRegister, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("raw member register: %s: %s", resp.Status, data)
	}
	var rr control.RegisterResponse
	if err := json.Unmarshal(data, &rr); err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+meshlab.CoordinatorIP+":8080"+control.PathStream+"?v=2", &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": []string{"Bearer " + rr.Credential}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(16 << 20)
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { ws.CloseNow() })
	return &rawMember{hc: hc, ws: ws, id: rr.NodeID}
}

func (m *rawMember) signal(ctx context.Context, s control.Signal) error {
	b, err := json.Marshal(control.Message{Type: control.MsgSignal, Signal: &s})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return m.ws.Write(wctx, websocket.MessageText, b)
}

// smallerKey is a random public key that sorts before other, so that the
// agent holding other is the controlled side (the one that answers offers).
func smallerKey(t *testing.T, other string) string {
	for range 1000 {
		var b [32]byte
		rand.Read(b[:])
		b[0] = 0xf8 // '+' in base64, which sorts before letters and digits
		if k := base64.StdEncoding.EncodeToString(b[:]); k < other {
			return k
		}
	}
	t.Fatalf("no key sorts before %s", other)
	return ""
}

// procStatus reads a field of /proc/PID/status in kB.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestSignalFlood: a member floods a victim with hundreds of large signals
// and thousands of offers, and sends signals with huge kinds to non-peers.
// The victim's stream must survive (the coordinator drops excess signals,
// not the receiver), its agent's memory must stay bounded (offers are rate
// limited per peer), and the coordinator's log must not grow with what the
// attacker sends.
func TestSignalFlood(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	key := authKey(t, coord, true)
	victim := addSiteAgent(t, lab, coord, "victim", natlab.None)
	startOnline(t, key, victim)
	st, err := victim.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evil, err := lab.AddSite("evil", natlab.None)
	if err != nil {
		t.Fatal(err)
	}
	m := joinRaw(t, evil.Host, key, smallerKey(t, st.Self.PublicKey))
	var victimID uint64
	nodes, err := coord.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == "victim" {
			victimID = n.ID
		}
	}
	waitOnlinePeers(t, victim, 1)
	// Let the victim's sessions towards the raw member settle.
	time.Sleep(3 * time.Second)
	pid := victim.Proc.Cmd.Process.Pid
	rss0 := procStatus(t, pid, "VmRSS")
	logSize0 := len(coord.Proc.Log())

	// Signals over the size cap (4 KB) but within a frame's read limit
	// (16 KB): dropped one by one. Before the cap, 400 of them filled the
	// victim's queue and the coordinator closed the victim's stream.
	big := strings.Repeat("x", 12<<10)
	start := time.Now()
	for i := range 400 {
		if err := m.signal(ctx, control.Signal{To: victimID, Kind: control.SignalCandidate, Session: "s", Candidate: big[:12<<10-i]}); err != nil {
			t.Fatalf("large signal %d: %v", i, err)
		}
	}
	// Kinds of 12 KB to a node that is not a peer: logged verbatim at INFO
	// before.
	for i := range 100 {
		if err := m.signal(ctx, control.Signal{To: 1 << 40, Kind: big[:12<<10-i]}); err != nil {
			t.Fatalf("signal with a large kind %d: %v", i, err)
		}
	}
	for i := range 3000 {
		lane := ""
		if i%2 == 1 {
			lane = control.LaneRelay
		}
		s := control.Signal{To: victimID, Kind: control.SignalOffer, Lane: lane,
			Session: fmt.Sprintf("flood%d", i), Ufrag: fmt.Sprintf("uf%06d", i), Pwd: fmt.Sprintf("pwdpwdpwdpwdpwdpwd%06d", i)}
		if err := m.signal(ctx, s); err != nil {
			t.Fatalf("offer %d: %v", i, err)
		}
	}
	// Last, frames of 60 KB: past the read limit they end the sender's own
	// stream (or, before the limit was lowered, were relayed); either way
	// the victim's stream must stay.
	huge := strings.Repeat("x", 60<<10)
	for i := range 20 {
		if err := m.signal(ctx, control.Signal{To: victimID, Kind: control.SignalCandidate, Session: "s", Candidate: huge}); err != nil {
			t.Logf("60 KB signal %d: %v (the coordinator ended the sender's stream)", i, err)
			break
		}
	}
	t.Logf("flood sent in %v", time.Since(start).Round(time.Millisecond))
	// Give the victim time to act on what got through.
	time.Sleep(10 * time.Second)

	rss, hwm := procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmHWM")
	logGrowth := len(coord.Proc.Log()) - logSize0
	t.Logf("victim agent RSS %d kB before, %d kB after, peak %d kB; coordinator log grew %d bytes", rss0, rss, hwm, logGrowth)
	var errs []string
	if n := strings.Count(victim.Proc.Log(), "connected to coordinator"); n != 1 {
		errs = append(errs, fmt.Sprintf("victim's stream was dropped: connected %d times\n%s", n, tail(victim.Proc.Log(), 20)))
	}
	if strings.Contains(coord.Proc.Log(), "send queue full") {
		errs = append(errs, "coordinator closed the victim's stream: send queue full")
	}
	if st, err := victim.Status(ctx); err != nil || !st.Coordinator.Connected {
		errs = append(errs, fmt.Sprintf("victim not connected after the flood: %v %+v", err, st))
	}
	// Measured: 15 → 47 MB before any limit; 15 → 28 MB with the
	// coordinator's limits and an agent that answers every offer; 15 → 17 MB
	// with the agent's own limit too.
	if hwm > rss0+8<<10 {
		errs = append(errs, fmt.Sprintf("victim agent peak RSS %d kB, more than 8 MB over %d kB", hwm, rss0))
	}
	if logGrowth > 64<<10 {
		errs = append(errs, fmt.Sprintf("coordinator log grew %d bytes during the flood", logGrowth))
	}
	if len(errs) > 0 {
		t.Fatal(strings.Join(errs, "\n"))
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestSlowBody: a client that trickles a /register body one byte every two
// seconds is cut off within 30 s, and one source cannot hold more than the
// per-source cap of connections open (2,000 stayed open before).
func TestSlowBody(t *testing.T) {
	lab, _ := newLab(t)
	evil, err := lab.AddSite("slow", natlab.None)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	t.Run("many", func(t *testing.T) { manyConns(t, evil.Host) })
	c, err := evil.Host.DialContext(ctx, "tcp", meshlab.CoordinatorIP+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := "POST " + control.PathRegister + " HTTP/1.1\r\nHost: " + meshlab.CoordinatorIP + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
	if _, err := io.WriteString(c, hdr); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(c, 4096))
		closed <- string(b)
	}()
	const limit = 30 * time.Second
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case answer := <-closed:
			took := time.Since(start)
			t.Logf("cut off after %v; answer: %q", took.Round(time.Millisecond), firstLine(answer))
			if took > limit {
				t.Fatalf("trickled body cut off after %v, want within %v", took, limit)
			}
			return
		case <-tick.C:
			if time.Since(start) > limit+10*time.Second {
				t.Fatalf("trickled body still open after %v", time.Since(start).Round(time.Second))
			}
			// A write error means the server closed; the reader reports it.
			c.Write([]byte("{"))
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// manyConns opens 400 connections from h to the API and counts those the
// coordinator closes at once: all beyond the per-source cap (256).
func manyConns(t *testing.T, h *natlab.Host) {
	const n, limit = 400, 256
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := h.DialContext(t.Context(), "tcp", meshlab.CoordinatorIP+":8080")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// Read all at once: a read past its deadline fails before it looks.
	var closed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				closed.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d connections from one source closed at once", closed.Load(), n)
	if open := n - int(closed.Load()); open > limit {
		t.Fatalf("%d connections from one source stay open, want at most %d", open, limit)
	}
}

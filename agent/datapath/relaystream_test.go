package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// TestStreamFrame: frame lengths on a stream, padding included, and
// garbage refused with an error that carries no more than a number.
func TestStreamFrame(t *testing.T) {
	stunHdr := func(size uint16, cookie uint32) []byte {
		p := make([]byte, 20)
		binary.BigEndian.PutUint16(p[2:], size)
		binary.BigEndian.PutUint32(p[4:], cookie)
		return p
	}
	chanHdr := func(num, size uint16) []byte {
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, num), size)
	}
	for _, c := range []struct {
		name string
		p    []byte
		n    int
		err  bool
	}{
		{"empty", nil, 0, false},
		{"three bytes", []byte{0x40, 0, 0}, 0, false},
		{"STUN", stunHdr(8, stunMagicCookie), 28, false},
		{"STUN, header cut before the cookie", stunHdr(8, stunMagicCookie)[:5], 28, false},
		{"STUN, largest", stunHdr(0xfffc, stunMagicCookie), 20 + 0xfffc, false},
		{"STUN without cookie", stunHdr(8, 0xdeadbeef), 0, true},
		{"STUN length not a multiple of 4", stunHdr(7, stunMagicCookie), 0, true},
		{"ChannelData, no padding", chanHdr(0x4000, 64), 68, false},
		{"ChannelData, padded 3", chanHdr(0x4001, 61), 68, false},
		{"ChannelData, padded 1", chanHdr(0x4fff, 63), 68, false},
		{"ChannelData, empty", chanHdr(0x4000, 0), 4, false},
		{"ChannelData, largest", chanHdr(0x4000, 0xffff), 4 + 0x10000, false},
		{"reserved channel", chanHdr(0x5000, 4), 0, true},
		{"neither", []byte{0x80, 0xff, 0xff, 0xff}, 0, true},
		{"all ones", []byte{0xff, 0xff, 0xff, 0xff}, 0, true},
	} {
		n, err := streamFrame(c.p)
		if n != c.n || (err != nil) != c.err {
			t.Errorf("%s: streamFrame = %d, %v; want %d, error %v", c.name, n, err, c.n, c.err)
		}
		if n > maxStreamFrame+1 || n > streamBatchSize/2 {
			t.Errorf("%s: frame of %d bytes does not fit a read batch with room", c.name, n)
		}
		if err != nil && len(err.Error()) > 100 {
			t.Errorf("%s: error of %d bytes", c.name, len(err.Error()))
		}
	}
}

// fakeStreamRelay is a TURN server on a loopback TCP port that grants
// Allocate and ChannelBind at once (no credentials asked), for one client;
// conns gives the test its side of the stream to write raw bytes on.
type fakeStreamRelay struct {
	ln    net.Listener
	conns chan *fakeStreamConn
	// garbage: answer every request with bytes that are no frame.
	garbage bool
}

type fakeStreamConn struct {
	net.Conn
	mu sync.Mutex // writes: the answers and the test's bytes
	// data gets the ChannelData frames the client sends, as framed.
	data    chan []byte
	garbage bool
}

func (c *fakeStreamConn) send(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.Write(p)
	return err
}

func startFakeStreamRelay(t *testing.T) *fakeStreamRelay { return startFakeStreamRelayWith(t, false) }

func startFakeStreamRelayWith(t *testing.T, garbage bool) *fakeStreamRelay {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeStreamRelay{ln: ln, conns: make(chan *fakeStreamConn, 4), garbage: garbage}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			fc := &fakeStreamConn{Conn: c, data: make(chan []byte, 64), garbage: f.garbage}
			f.conns <- fc
			go fc.answer()
		}
	}()
	return f
}

// answer grants the client's requests; anything else it sends is read
// and dropped.
func (c *fakeStreamConn) answer() {
	buf := make([]byte, 1<<17)
	have := 0
	for {
		n, err := c.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		off := 0
		for {
			size, err := streamFrame(buf[off:have])
			if err != nil {
				return
			}
			if size == 0 || off+size > have {
				break
			}
			p := buf[off : off+size]
			off += size
			if p[0]>>6 != 0 {
				select {
				case c.data <- append([]byte(nil), p...):
				default:
				}
				continue
			}
			req := &stun.Message{Raw: append([]byte(nil), p...)}
			if req.Decode() != nil {
				continue
			}
			setters := []stun.Setter{stun.NewTransactionIDSetter(req.TransactionID),
				stun.NewType(req.Type.Method, stun.ClassSuccessResponse)}
			if req.Type.Method == stun.MethodAllocate {
				relayed := stun.XORMappedAddress{IP: net.IPv4(192, 0, 2, 1), Port: 50000}
				setters = append(setters, setterFunc(func(m *stun.Message) error { return relayed.AddToAs(m, stun.AttrXORRelayedAddress) }),
					stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 0x58}})
			}
			res := stun.MustBuild(setters...)
			if c.garbage {
				res.Raw = bytes.Repeat([]byte{0xee}, 64)
			}
			if c.send(res.Raw) != nil {
				return
			}
		}
		have = copy(buf, buf[off:have])
	}
}

func (f *fakeStreamRelay) target() RelayServer {
	addr := f.ln.Addr().String()
	return RelayServer{URL: "turn:" + addr + "?transport=tcp", Server: addr, Transport: "tcp",
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", addr)
		}}
}

// logBuffer collects a logger's output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// streamClient is a shared client allocated on a fake stream relay, with
// a channel bound to peer, its bind's deliveries and the relay's side.
func streamClient(t *testing.T, log *slog.Logger) (*RelayClient, *RelayChan, <-chan []byte, *fakeStreamConn) {
	t.Helper()
	f := startFakeStreamRelay(t)
	bind := NewBind(nil)
	got := receiveAll(t, bind)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := NewRelayClient(ctx, log, f.target(), bind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if want := netip.MustParseAddrPort("192.0.2.1:50000"); c.RelayedAddr() != want {
		t.Fatalf("relayed address %s, want %s", c.RelayedAddr(), want)
	}
	ch, err := c.Channel(netip.MustParseAddrPort("192.0.2.2:50001"))
	if err != nil {
		t.Fatal(err)
	}
	return c, ch, got, <-f.conns
}

// channelData frames p as padded ChannelData on num.
func channelData(num uint16, p []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, num)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	b = append(b, p...)
	return append(b, make([]byte, pad4(len(p))-len(p))...)
}

// TestRelayStreamPartialReads: frames cut anywhere by the stream (one byte
// a write, and a frame across two writes), padded to 4 bytes and mixed
// with a STUN indication, come out as WireGuard's whole messages, in order.
func TestRelayStreamPartialReads(t *testing.T) {
	_, ch, got, relay := streamClient(t, slog.New(slog.DiscardHandler))
	var want [][]byte
	var stream []byte
	for i := range 8 {
		m := wgMessage(byte(i))[:61+i%4] // padded by 3, 2, 1, 0
		m[len(m)-1] = byte(i)
		want = append(want, m)
		stream = append(stream, channelData(ch.num, m)...)
		if i == 3 {
			ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication))
			stream = append(stream, ind.Raw...)
		}
	}
	for i, b := range stream[:40] {
		if err := relay.send([]byte{b}); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(time.Millisecond) // let the client read what came
		}
	}
	if err := relay.send(stream[40:]); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		select {
		case p := <-got:
			if !bytes.Equal(p, w) {
				t.Fatalf("message %d: got %x, want %x", i, p, w)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("message %d not delivered", i)
		}
	}
}

// TestRelayStreamSends: WireGuard's batch goes out as padded ChannelData
// the relay can frame.
func TestRelayStreamSends(t *testing.T) {
	_, ch, _, relay := streamClient(t, slog.New(slog.DiscardHandler))
	batch := [][]byte{wgMessage(1)[:61], wgMessage(2), wgMessage(3)[:33]}
	if err := ch.writeBatch(batch); err != nil {
		t.Fatal(err)
	}
	for i, w := range batch {
		select {
		case f := <-relay.data:
			if len(f)%4 != 0 || binary.BigEndian.Uint16(f) != ch.num || int(binary.BigEndian.Uint16(f[2:])) != len(w) || !bytes.Equal(f[4:4+len(w)], w) {
				t.Fatalf("frame %d: %x, want ChannelData of %x padded", i, f, w)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("frame %d not sent", i)
		}
	}
}

// TestRelayStreamGarbage: a relay that sends garbage (after a valid
// start, and then without end) loses the client its stream at once, with
// one log line of bounded size that quotes none of it, and no panic.
func TestRelayStreamGarbage(t *testing.T) {
	for _, g := range []struct {
		name  string
		bytes []byte
	}{
		{"not a frame", bytes.Repeat([]byte{0xff}, 1<<16)},
		{"reserved channel", channelData(0x7fff, bytes.Repeat([]byte("A"), 4096))},
		{"STUN without cookie", append([]byte{0, 1, 0, 8}, bytes.Repeat([]byte("B"), 4096)...)},
	} {
		t.Run(g.name, func(t *testing.T) {
			var logs logBuffer
			c, _, _, relay := streamClient(t, slog.New(slog.NewTextHandler(&logs, nil)))
			// A valid frame, then garbage until the client hangs up.
			_ = relay.send(channelData(0x4000, wgMessage(1)))
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 256 {
					if relay.send(g.bytes) != nil {
						return
					}
				}
			}()
			if err := waitFor(3*time.Second, c.Dead); err != nil {
				t.Fatalf("client still alive after garbage: %v", err)
			}
			<-done
			out := logs.String()
			if n := strings.Count(out, "relay stream lost"); n != 1 {
				t.Errorf("%d log lines on the lost stream, want 1:\n%s", n, out)
			}
			if len(out) > 400 || strings.Contains(out, "AAAA") || strings.Contains(out, "BBBB") {
				t.Errorf("log of %d bytes, or quoting the garbage:\n%s", len(out), out)
			}
		})
	}
}

// TestRelayStreamGarbageAtAllocate: a relay that answers the Allocate
// with garbage fails the client at once, not after the request's timeout.
func TestRelayStreamGarbageAtAllocate(t *testing.T) {
	f := startFakeStreamRelayWith(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := NewRelayClient(ctx, slog.New(slog.DiscardHandler), f.target(), NewBind(nil))
	if err == nil {
		c.Close()
		t.Fatal("allocated on a relay that answers garbage")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("garbage answer noticed after %v (%v), want at once", took.Round(time.Millisecond), err)
	}
	t.Logf("error: %v", err)
}

// TestRelayStreamFloodBounded: a relay that sends without end frames of
// the largest size (STUN indications nobody waits for, ChannelData on
// channels nobody bound) makes the client allocate next to nothing: it
// reads them into its fixed buffers and drops them uncopied. (Before, each
// STUN message was copied whole before its transaction was looked up:
// 64 KiB allocated per message.)
func TestRelayStreamFloodBounded(t *testing.T) {
	c, _, _, relay := streamClient(t, slog.New(slog.DiscardHandler))
	ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, 0xffff-8)})
	unbound := channelData(0x4abc, make([]byte, 0xffff))
	const rounds = 512 // 32 MiB
	var before, after runtimeMem
	before.read()
	for i := range rounds {
		p := ind.Raw
		if i%2 == 1 {
			p = unbound
		}
		if err := relay.send(p); err != nil {
			t.Fatalf("round %d: %v (client dropped a valid stream)", i, err)
		}
	}
	// A request answered after the flood: the stream still frames.
	if err := c.refresh(time.Minute); err != nil {
		t.Fatalf("refresh after the flood: %v", err)
	}
	after.read()
	grew := after.total - before.total
	t.Logf("allocated %d KiB while %d MiB of frames went by", grew>>10, rounds*64>>10)
	if grew > 4<<20 {
		t.Fatalf("client allocated %d MiB for %d MiB of frames nobody asked for", grew>>20, rounds*64>>10)
	}
	if c.Dead() {
		t.Fatal("client dead after valid frames")
	}
}

// runtimeMem is what the runtime has allocated so far.
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var st runtime.MemStats
	runtime.ReadMemStats(&st)
	m.total = st.TotalAlloc
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) error {
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			return errors.New("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// TestSharedRelayClientStreamOneAllocation: over TCP to the relay
// package's server, two clients relay WireGuard messages to each other
// (and to a UDP client), and one of them with 50 relayed peers holds one
// allocation, as the relay's own counters say.
func TestSharedRelayClientStreamOneAllocation(t *testing.T) {
	s := startTestRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bind := NewBind(nil)
	got := receiveAll(t, bind)
	log := slog.New(slog.DiscardHandler)
	tcp := func(node uint64) RelayServer {
		r := testTarget(s, node)
		r.Transport = "tcp"
		r.URL = "turn:" + r.Server + "?transport=tcp"
		r.Dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", r.Server)
		}
		return r
	}
	var clients []*RelayClient
	for i, tg := range []RelayServer{tcp(1), tcp(2), testTarget(s, 3)} {
		c, err := NewRelayClient(ctx, log, tg, bind)
		if err != nil {
			t.Fatalf("client %d over %s: %v", i+1, tg.Transport, err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	for i, pair := range [][2]int{{0, 1}, {1, 0}, {0, 2}, {2, 0}} {
		from, to := clients[pair[0]], clients[pair[1]]
		ch, err := from.Channel(to.RelayedAddr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := to.Channel(from.RelayedAddr()); err != nil {
			t.Fatal(err)
		}
		var batch [][]byte
		for k := range 20 {
			m := wgMessage(byte(i))[:40+k] // every padding
			m[len(m)-1] = byte(k)
			batch = append(batch, m)
		}
		if err := ch.ep.send(batch); err != nil {
			t.Fatal(err)
		}
		for k, w := range batch {
			select {
			case p := <-got:
				if !bytes.Equal(p, w) {
					t.Fatalf("pair %d message %d: got %x, want %x", i, k, p, w)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("pair %d message %d not relayed", i, k)
			}
		}
	}
	for i := range 50 {
		peer := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", 42000+i))
		if _, err := clients[0].Channel(peer); err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
	}
	if n := s.NodeAllocations(1); n != 1 {
		t.Fatalf("relay counts %d allocations for the TCP client with 52 relayed peers, want 1", n)
	}
	// The relay frees a stream's allocation with the stream.
	clients[0].Close()
	if err := waitFor(3*time.Second, func() bool { return s.NodeAllocations(1) == 0 }); err != nil {
		t.Fatalf("relay still counts %d allocations after the stream closed", s.NodeAllocations(1))
	}
}

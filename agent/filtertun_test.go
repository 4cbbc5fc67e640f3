package agent

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/filter"
	"github.com/meshvpn/meshvpn/policy"
)

// fakeTUN hands out queued packets on Read and records Writes.
type fakeTUN struct {
	wgtun.Device
	reads   [][]byte
	written [][]byte
}

func (t *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && len(t.reads) > 0 {
		sizes[n] = copy(bufs[n][offset:], t.reads[0])
		t.reads = t.reads[1:]
		n++
	}
	return n, nil
}

func (t *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		t.written = append(t.written, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}

func synTo(src, dst string, dport uint16) []byte {
	b := make([]byte, 40)
	b[0], b[9] = 0x45, 6
	binary.BigEndian.PutUint16(b[2:4], 40)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[33] = 0x02
	return b
}

func TestFilterTUN(t *testing.T) {
	f := filter.New()
	f.Set(&policy.Filter{
		In:  []policy.Rule{{Peers: []string{"laptop"}, Proto: 6, Ports: []policy.PortRange{{First: 22, Last: 22}}}},
		Out: []policy.Rule{},
	}, []filter.Peer{filterPeer(control.Node{Name: "laptop", IP: "100.64.0.1"}, netip.Addr{})})
	dev := &fakeTUN{reads: [][]byte{synTo("100.64.0.2", "100.64.0.1", 22)}}
	ft := &filterTUN{Device: dev, f: f}

	// Outbound: the server may not open a connection to the laptop.
	bufs := [][]byte{make([]byte, 100)}
	sizes := []int{0}
	if n, _ := ft.Read(bufs, sizes, 16); n != 1 || sizes[0] != 0 {
		t.Fatalf("outbound SYN: n %d size %d, want dropped (size 0)", n, sizes[0])
	}
	// Inbound: port 22 passes, port 80 does not.
	in := [][]byte{append(make([]byte, 16), synTo("100.64.0.1", "100.64.0.2", 22)...), append(make([]byte, 16), synTo("100.64.0.1", "100.64.0.2", 80)...)}
	if n, err := ft.Write(in, 16); n != 2 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	if len(dev.written) != 1 || binary.BigEndian.Uint16(dev.written[0][22:]) != 22 {
		t.Fatalf("wrote %d packets, want only the one to port 22", len(dev.written))
	}
}

// refreshFilter never holds a.mu while it waits for a peer's lock: a
// peer starting a session holds its own lock and then takes a.mu (its
// STUN servers), so the other order deadlocked an agent at start (seen in
// make bench-mesh).
func TestRefreshFilterLockOrder(t *testing.T) {
	a := &Agent{filter: filter.New(), peers: map[uint64]*peer{}}
	p := &peer{a: a, id: 1, node: control.Node{ID: 1, Name: "laptop", IP: "100.64.0.1"}}
	a.peers[1] = p

	p.mu.Lock() // a peer in the middle of starting a session
	done := make(chan struct{})
	go func() { a.refreshFilter(); close(done) }()
	time.Sleep(50 * time.Millisecond)
	got := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if a.mu.TryLock() { // what the peer does next (stunURLs)
			got = true
			a.mu.Unlock()
			break
		}
	}
	p.mu.Unlock()
	<-done
	if !got {
		t.Fatal("refreshFilter held the agent's lock while waiting for a peer's: lock-order deadlock")
	}
}

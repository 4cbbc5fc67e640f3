package relay

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// TestRelayFastPathChannelData relays ChannelData both ways on a bound
// channel with a raw client: the fast path mirrors pion's binding, frames
// what peers send as pion does (4-byte header, padded to 4), keeps the
// host guard (a port of this host without an allocation is neither
// reached nor heard), counts usage, and forgets the channel when the
// allocation goes.
func TestRelayFastPathChannelData(t *testing.T) {
	s, server := startRelay(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	user, pass := testCredential(testNode)
	r := dialRawTURN(t, server, user, pass)
	resp := r.request(stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	var relayed stun.XORMappedAddress
	if resp.Type.Class != stun.ClassSuccessResponse || relayed.GetFromAs(resp, stun.AttrXORRelayedAddress) != nil {
		t.Fatalf("allocate: %v", resp)
	}
	// The relay socket binds 127.0.0.1 (advertised as 127.0.0.2).
	relayAt := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: relayed.Port}
	peer := listenInRange(t, 40900, 40999)
	// The peer stands in for another allocation of this relay: on its own
	// host the guard lets only those through.
	s.allocs.setLive(peer.LocalAddr().(*net.UDPAddr).Port, true)
	outside := listenUDP4(t)
	for p := outside.LocalAddr().(*net.UDPAddr).Port; p >= 40000 && p <= 40999; p = outside.LocalAddr().(*net.UDPAddr).Port {
		outside = listenUDP4(t)
	}
	bind := func(number uint16, to *net.UDPConn) {
		a := to.LocalAddr().(*net.UDPAddr)
		resp := r.request(stun.MethodChannelBind,
			stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(number >> 8), byte(number), 0, 0}},
			xorPeer{stun.XORMappedAddress{IP: a.IP, Port: a.Port}})
		if resp.Type.Class != stun.ClassSuccessResponse {
			t.Fatalf("channel bind %#x: %v", number, resp)
		}
	}
	bind(0x4001, peer)
	bind(0x4002, outside)
	if n := s.fast.channels(); n != 2 {
		t.Fatalf("fast path has %d channels after two bindings, want 2", n)
	}
	rc := s.allocs.conn(relayed.Port)
	if rc == nil {
		t.Fatal("no relay socket at the relayed port")
	}
	usage0 := rc.meter.load()

	// Client to peer: a burst, in order, from the relay address.
	const burst = 100
	for i := range burst {
		data := []byte(fmt.Sprintf("to-peer-%03d", i)) // 11 bytes: 1 of padding
		frame := binary.BigEndian.AppendUint16(nil, 0x4001)
		frame = binary.BigEndian.AppendUint16(frame, uint16(len(data)))
		frame = append(append(frame, data...), 0)
		if _, err := r.conn.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2000)
	for i := range burst {
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := peer.ReadFrom(buf)
		if err != nil {
			t.Fatalf("peer read %d: %v", i, err)
		}
		if want := fmt.Sprintf("to-peer-%03d", i); string(buf[:n]) != want || from.String() != relayAt.String() {
			t.Fatalf("peer read %q from %v, want %q from %v", buf[:n], from, want, relayAt)
		}
	}
	// Peer to client: framed on channel 0x4001, padded.
	for i := range burst {
		if _, err := peer.WriteTo(make([]byte, 1+i%7), relayAt); err != nil {
			t.Fatal(err)
		}
	}
	for i := range burst {
		r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.conn.Read(buf)
		if err != nil {
			t.Fatalf("client read %d: %v", i, err)
		}
		want := 1 + i%7
		if n < 4 || binary.BigEndian.Uint16(buf[0:2]) != 0x4001 || int(binary.BigEndian.Uint16(buf[2:4])) != want || n != 4+(want+3)/4*4 {
			t.Fatalf("client read %x, want ChannelData 0x4001 of %d bytes padded to 4", buf[:n], want)
		}
	}
	// The host guard holds on the fast path both ways.
	r.conn.Write([]byte{0x40, 0x02, 0, 4, 'n', 'o', 'p', 'e'})
	outside.WriteTo([]byte("nope"), relayAt)
	outside.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := outside.ReadFrom(buf); err == nil {
		t.Errorf("a port of this host without an allocation got %q", buf[:n])
	}
	r.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := r.conn.Read(buf); err == nil {
		t.Errorf("the client got %x from a port of this host without an allocation", buf[:n])
	}
	got := rc.meter.load()
	if d := got.BytesOut - usage0.BytesOut; d != burst*11 {
		t.Errorf("usage out %d bytes, want %d", d, burst*11)
	}
	if d := got.PacketsIn - usage0.PacketsIn; d != burst {
		t.Errorf("usage in %d packets, want %d", d, burst)
	}
	// Deleting the allocation (a Refresh with lifetime 0) unbinds.
	r.request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	deadline := time.Now().Add(2 * time.Second)
	for s.fast.channels() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.fast.channels(); n != 0 {
		t.Errorf("fast path still has %d channels after the allocation closed", n)
	}
}

// listenInRange binds a UDP socket on 127.0.0.1 at a free port in
// [lo, hi]: a peer the relay may reach on its own host.
func listenInRange(t *testing.T, lo, hi int) *net.UDPConn {
	t.Helper()
	for p := hi; p >= lo; p-- {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
	}
	t.Fatalf("no free port in %d-%d", lo, hi)
	return nil
}

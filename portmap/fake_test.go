package portmap

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// fakePMP is a NAT-PMP and PCP gateway on loopback. Its knobs let a test
// make it misbehave.
type fakePMP struct {
	t    *testing.T
	conn *net.UDPConn

	mu       sync.Mutex
	pmp, pcp bool       // which protocols it speaks
	external netip.Addr // what it says its external address is
	epoch    uint32
	garbage  []byte // when set, every answer is this
	silent   bool   // answers nothing
	nextPort uint16 // external port granted when the asked one is 0
	mapped   map[uint16]uint16
	deletes  int
	requests int
	// answerFrom, when set, sends the answers from this socket instead: a
	// host or port other than the gateway's.
	answerFrom *net.UDPConn
}

func newFakePMP(t *testing.T) *fakePMP {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePMP{t: t, conn: c, pmp: true, pcp: true, external: netip.MustParseAddr("203.0.113.7"),
		epoch: 1000, nextPort: 40001, mapped: map[uint16]uint16{}}
	t.Cleanup(func() { c.Close() })
	go f.serve()
	return f
}

func (f *fakePMP) config() Config {
	return Config{Gateway: netip.MustParseAddr("127.0.0.1"), pmpPort: uint16(f.conn.LocalAddr().(*net.UDPAddr).Port), Disable: []Protocol{UPnP}}
}

func (f *fakePMP) set(fn func(f *fakePMP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakePMP) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out := f.answer(buf[:n]); out != nil {
			f.mu.Lock()
			via := f.answerFrom
			f.mu.Unlock()
			if via == nil {
				via = f.conn
			}
			via.WriteToUDP(out, from)
		}
	}
}

func (f *fakePMP) answer(req []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.silent || len(req) < 2 {
		return nil
	}
	if f.garbage != nil {
		return f.garbage
	}
	switch {
	case req[0] == 0 && f.pmp:
		return f.answerPMP(req)
	case req[0] == 0 || (req[0] == 2 && !f.pcp && f.pmp):
		// NAT-PMP server refusing PCP: version 0, unsupported version.
		return []byte{0, req[1] | 128, 0, 1, 0, 0, 0, 0}
	case req[0] == 2 && f.pcp:
		return f.answerPCP(req)
	}
	return nil
}

func (f *fakePMP) grant(internal, want uint16, lifetime uint32) uint16 {
	if lifetime == 0 {
		f.deletes++
		delete(f.mapped, internal)
		return 0
	}
	if want == 0 {
		want = f.nextPort
	}
	f.mapped[internal] = want
	return want
}

func (f *fakePMP) answerPMP(req []byte) []byte {
	switch req[1] {
	case 0:
		out := make([]byte, 12)
		out[1] = 128
		binary.BigEndian.PutUint32(out[4:8], f.epoch)
		a := f.external.As4()
		copy(out[8:12], a[:])
		return out
	case 1:
		if len(req) < 12 {
			return nil
		}
		internal := binary.BigEndian.Uint16(req[4:6])
		want := binary.BigEndian.Uint16(req[6:8])
		life := binary.BigEndian.Uint32(req[8:12])
		ext := f.grant(internal, want, life)
		out := make([]byte, 16)
		out[1] = 129
		binary.BigEndian.PutUint32(out[4:8], f.epoch)
		binary.BigEndian.PutUint16(out[8:10], internal)
		binary.BigEndian.PutUint16(out[10:12], ext)
		binary.BigEndian.PutUint32(out[12:16], life)
		return out
	}
	return []byte{0, req[1] | 128, 0, 5, 0, 0, 0, 0}
}

func (f *fakePMP) answerPCP(req []byte) []byte {
	if len(req) < 24 {
		return nil
	}
	out := make([]byte, 24)
	out[0], out[1] = 2, req[1]|0x80
	binary.BigEndian.PutUint32(out[8:12], f.epoch)
	switch req[1] {
	case 0:
		return out
	case 1:
		if len(req) < 60 {
			return nil
		}
		body := append([]byte(nil), req[24:60]...)
		life := binary.BigEndian.Uint32(req[4:8])
		internal := binary.BigEndian.Uint16(body[16:18])
		want := binary.BigEndian.Uint16(body[18:20])
		ext := f.grant(internal, want, life)
		binary.BigEndian.PutUint32(out[4:8], life)
		binary.BigEndian.PutUint16(body[18:20], ext)
		a := f.external.As16()
		copy(body[20:36], a[:])
		return append(out, body...)
	}
	out[3] = 4
	return out
}

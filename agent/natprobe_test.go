package agent

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/pion/stun/v4"
)

// fakeSTUN answers Binding requests on loopback with the mapped port
// port(n) for its n-th request (from 1), whatever the sender's port.
func fakeSTUN(t *testing.T, port func(n int64) int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var req stun.Message
			req.Raw = append([]byte(nil), buf[:k]...)
			if req.Decode() != nil {
				continue
			}
			res := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.IPv4(203, 0, 113, 102), Port: port(n.Add(1))}, stun.Fingerprint)
			pc.WriteTo(res.Raw, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestProbeNATConfirmsSymmetric: one socket whose two flows got two ports
// (a collision on a port-preserving NAT) does not make the NAT symmetric
// when a second socket's flows share one port; a NAT that gives every
// flow its own port stays symmetric.
func TestProbeNATConfirmsSymmetric(t *testing.T) {
	// Collision once: server a maps the first socket to 60057, then to
	// 41000 like server b always does.
	a := fakeSTUN(t, func(n int64) int {
		if n == 1 {
			return 60057
		}
		return 41000
	})
	b := fakeSTUN(t, func(int64) int { return 41000 })
	if label, mapped := probeNATConfirmed([]string{a, b}); label != "" || len(mapped) != 2 || mapped[0] != mapped[1] {
		t.Errorf("one collided socket: label %q, mapped %v; want no symmetric NAT seen, from the second socket", label, mapped)
	}

	c := fakeSTUN(t, func(n int64) int { return 20000 + int(n) })
	d := fakeSTUN(t, func(n int64) int { return 30000 + int(n) })
	if label, _ := probeNATConfirmed([]string{c, d}); label != natSymmetric {
		t.Errorf("a NAT that maps every flow anew: label %q, want %q", label, natSymmetric)
	}
}

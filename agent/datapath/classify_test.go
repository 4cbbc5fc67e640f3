package datapath

import (
	"testing"

	"github.com/pion/stun/v4"
)

// packetKind is what the shared socket's receive path makes of a packet.
type packetKind string

const (
	kindOther     packetKind = "other"
	kindWireGuard packetKind = "wireguard"
	kindSTUN      packetKind = "stun"
)

func classify(b []byte) packetKind {
	switch {
	case IsWireGuard(b):
		return kindWireGuard
	case IsSTUN(b):
		return kindSTUN
	}
	return kindOther
}

func TestClassify(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	wg := make([]byte, 148)
	wg[0] = 1 // handshake initiation
	data := make([]byte, 32)
	data[0] = 4 // transport data, empty keepalive
	tests := []struct {
		name string
		in   []byte
		want packetKind
	}{
		{"stun binding request", req.Raw, kindSTUN},
		{"wireguard initiation", wg, kindWireGuard},
		{"wireguard keepalive", data, kindWireGuard},
		{"short", []byte{1, 0, 0, 0}, kindOther},
		{"wireguard type 5", append([]byte{5, 0, 0, 0}, make([]byte, 40)...), kindOther},
		{"stun bad length", append(append([]byte(nil), req.Raw...), 0, 0, 0, 0), kindOther},
		{"empty", nil, kindOther},
	}
	for _, tc := range tests {
		if got := classify(tc.in); got != tc.want {
			t.Errorf("%s: classify = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzClassify checks the classifier never panics and that whatever it calls
// STUN really parses as STUN, so garbage never reaches ICE as a message.
func FuzzClassify(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(make([]byte, 32))
	f.Add([]byte{1, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		switch classify(b) {
		case kindSTUN:
			if !stun.IsMessage(b) {
				t.Fatalf("classified as STUN but stun.IsMessage is false: %x", b)
			}
			if len(b) >= 32 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
				t.Fatalf("WireGuard-shaped packet classified as STUN: %x", b)
			}
		case kindWireGuard:
			if len(b) < 32 {
				t.Fatalf("short packet classified as WireGuard: %x", b)
			}
		}
	})
}

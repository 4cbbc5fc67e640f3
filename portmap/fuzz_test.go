package portmap

import (
	"encoding/binary"
	"testing"
)

func FuzzParsePMPResponse(f *testing.F) {
	f.Add([]byte{0, 128, 0, 0, 0, 0, 3, 232, 203, 0, 113, 7})
	f.Add([]byte{0, 129, 0, 0, 0, 0, 3, 232, 0x1f, 0x90, 0x9c, 0x41, 0, 0, 0x1c, 0x20})
	f.Add([]byte{0, 129, 0, 3, 0, 0, 0, 1})
	f.Add([]byte{2, 129, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parsePMPResponse(data)
		if err != nil {
			return
		}
		if len(data) < 8 || data[0] != 0 || data[1]&128 == 0 {
			t.Fatalf("accepted a non-answer % x", data)
		}
		if r.Epoch != binary.BigEndian.Uint32(data[4:8]) {
			t.Fatalf("epoch %d from % x", r.Epoch, data)
		}
		if r.Result == 0 && r.Op == 1 && (len(data) < 16 || r.ExternalPort != binary.BigEndian.Uint16(data[10:12])) {
			t.Fatalf("mapping answer misread: %+v from % x", r, data)
		}
	})
}

func FuzzParsePCPResponse(f *testing.F) {
	hdr := make([]byte, 24)
	hdr[0], hdr[1] = 2, 0x80
	f.Add(hdr)
	m := append(append([]byte(nil), hdr...), make([]byte, 36)...)
	m[1] = 0x81
	m[24+12] = 17
	m[24+16], m[24+17], m[24+18], m[24+19] = 0x1f, 0x90, 0x9c, 0x41
	copy(m[24+20:], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7})
	f.Add(m)
	f.Add(m[:40])
	f.Add([]byte{0, 129, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parsePCPResponse(data)
		if err != nil {
			return
		}
		if len(data) < 24 || data[0] != 2 || data[1]&0x80 == 0 || len(data)%4 != 0 {
			t.Fatalf("accepted a non-answer % x", data)
		}
		if r.Op == 1 && r.Result == 0 {
			if len(data) < 60 || r.ExternalPort != binary.BigEndian.Uint16(data[42:44]) {
				t.Fatalf("MAP answer misread: %+v from % x", r, data)
			}
		}
	})
}

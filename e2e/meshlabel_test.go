package e2e

import "testing"

// TestSymmetricLabelOK: the check TestMeshAllNATPairs makes of a peer's
// label for a symmetric NAT's address accepts srflx only for an address
// the NAT's own STUN flow has.
func TestSymmetricLabelOK(t *testing.T) {
	own := []string{"198.18.2.2:40000"}
	for _, c := range []struct {
		label, ep string
		srflx     []string
		ok        bool
	}{
		{"prflx", "198.18.2.2:24582", nil, true},
		{"srflx", "198.18.2.2:40000", own, true},
		{"srflx", "198.18.2.2:24582", own, false}, // another port: mislabelled
		{"srflx", "198.18.2.2:40000", nil, false},
		{"host", "10.2.0.11:40000", own, false},
		{"relay", "198.18.2.2:40000", own, false},
	} {
		_, err := symmetricLabelOK(c.label, c.ep, c.srflx)
		if (err == nil) != c.ok {
			t.Errorf("%s %s with own srflx %v: err %v, want ok=%v", c.label, c.ep, c.srflx, err, c.ok)
		}
	}
}

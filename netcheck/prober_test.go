package netcheck

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// FuzzAnswer parses arbitrary server answers: a lying or broken STUN server
// gives an error, never a panic or an address that is not one.
func FuzzAnswer(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: net.ParseIP("198.51.100.7"), Port: 4000},
		&stun.OtherAddress{IP: net.ParseIP("203.0.113.11"), Port: 3479}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassErrorResponse), stun.CodeUnknownAttribute).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.MappedAddress{IP: net.ParseIP("2001:db8::1"), Port: 0}).Raw)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var m stun.Message
		if err := stun.Decode(pkt, &m); err != nil {
			return
		}
		a := answer{msg: &m, from: netip.MustParseAddrPort("203.0.113.10:3478")}
		if ap, err := a.mapped(); err == nil && (!ap.IsValid() || ap.Port() == 0) {
			t.Fatalf("mapped %v without error", ap)
		}
		if ap, ok := a.otherAddress(); ok && (!ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified()) {
			t.Fatalf("OTHER-ADDRESS %v accepted", ap)
		}
	})
}

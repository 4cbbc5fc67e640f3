package hostdns

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// The arguments setLink passes encode to the signatures of
// org.freedesktop.resolve1.Manager's methods (see
// org.freedesktop.resolve1(5)); a mismatch would only show on a real bus.
func TestResolvedSignatures(t *testing.T) {
	bus := &fakeBus{}
	if err := setLink(bus, 3, resolver, "mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if err := revertLink(bus, 3); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"SetLinkDNS":          "ia(iay)",
		"SetLinkDomains":      "ia(sb)",
		"SetLinkDefaultRoute": "ib",
		"SetLinkDNSSEC":       "is",
		"RevertLink":          "i",
	}
	for _, c := range bus.calls {
		if got := dbus.SignatureOf(c.args...).String(); got != want[c.method] {
			t.Errorf("%s: signature %q, want %q", c.method, got, want[c.method])
		}
		delete(want, c.method)
	}
	if len(want) != 0 {
		t.Errorf("not called: %v", want)
	}
}

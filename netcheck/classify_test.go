package netcheck

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	ap := netip.MustParseAddrPort
	var (
		primary = ap("203.0.113.10:3478")
		altBoth = ap("203.0.113.11:3479")
		altIP   = ap("203.0.113.11:3478")
		altPort = ap("203.0.113.10:3479")
		other   = ap("198.51.100.5:3478")
		m1      = ap("198.51.100.7:40000")
		m2      = ap("198.51.100.7:51234")
		m3      = ap("198.51.100.7:61000")
		none    netip.AddrPort
	)
	b := func(dest, mapped netip.AddrPort) Binding { return Binding{Dest: dest, Mapped: mapped} }
	cases := []struct {
		name         string
		obs          Observations
		nat, mapping string
		filtering    string
		wantReason   bool
	}{
		{"no answer at all", Observations{Bindings: []Binding{b(primary, none)}},
			NATUDPBlocked, Unknown, Unknown, true},
		{"no bindings", Observations{},
			NATUDPBlocked, Unknown, Unknown, true},
		{"public host", Observations{Local: true, Bindings: []Binding{b(primary, m1), b(altBoth, m1)}, ChangeIPPort: Answered, ChangePort: Answered},
			NATNone, EndpointIndependent, EndpointIndependent, false},
		{"public host, no alternate", Observations{Local: true, Bindings: []Binding{b(primary, m1)}, ChangeIPPortReason: "x", ChangePortReason: "x"},
			NATNone, EndpointIndependent, Unknown, false},
		{"full cone", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m1), b(altIP, m1)}, ChangeIPPort: Answered, ChangePort: Answered},
			NATFullCone, EndpointIndependent, EndpointIndependent, false},
		{"restricted cone", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m1), b(altIP, m1)}, ChangeIPPort: Silent, ChangePort: Answered},
			NATRestricted, EndpointIndependent, AddressDependent, false},
		{"port-restricted cone", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m1), b(altIP, m1)}, ChangeIPPort: Silent, ChangePort: Silent},
			NATPortRestricted, EndpointIndependent, AddrPortDependent, false},
		{"port-restricted, port-only server", Observations{Bindings: []Binding{b(primary, m1), b(altPort, m1)}, ChangeIPPortReason: "no second IP", ChangePort: Silent},
			NATPortRestricted, EndpointIndependent, AddrPortDependent, false},
		{"symmetric, address-and-port-dependent", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m2), b(altIP, m3)}, ChangeIPPort: Silent, ChangePort: Silent},
			NATSymmetric, AddrPortDependent, AddrPortDependent, false},
		{"symmetric, port-only server", Observations{Bindings: []Binding{b(primary, m1), b(altPort, m2)}, ChangePort: Silent},
			NATSymmetric, AddrPortDependent, AddrPortDependent, false},
		{"symmetric, address-dependent", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m2), b(altIP, m2), b(altPort, m1)}, ChangeIPPort: Silent, ChangePort: Answered},
			NATSymmetric, AddressDependent, AddressDependent, false},
		{"symmetric via two plain servers", Observations{Bindings: []Binding{b(primary, m1), b(other, m2)}, ChangeIPPortReason: "no alternate", ChangePortReason: "no alternate"},
			NATSymmetric, AddressDependent, Unknown, false},
		{"symmetric, only the both-changed address", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m2)}, ChangeIPPort: Silent, ChangePort: Silent},
			NATSymmetric, EndpointDependent, AddrPortDependent, false},
		{"cone via two plain servers: filtering untested", Observations{Bindings: []Binding{b(primary, m1), b(other, m1)}, ChangeIPPortReason: "no alternate", ChangePortReason: "no alternate"},
			NATUnknown, EndpointIndependent, Unknown, true},
		{"one server only", Observations{Bindings: []Binding{b(primary, m1)}, ChangeIPPortReason: "no alternate", ChangePortReason: "no alternate"},
			NATUnknown, Unknown, Unknown, true},
		{"alternate silent: mapping untested", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, none)}, ChangeIPPort: Silent, ChangePort: Silent},
			NATUnknown, Unknown, AddrPortDependent, true},
		{"port-only server, port reply came: full or restricted", Observations{Bindings: []Binding{b(primary, m1), b(altPort, m1)}, ChangeIPPortReason: "no second IP", ChangePort: Answered},
			NATUnknown, EndpointIndependent, Unknown, true},
		{"contradicting filtering tests", Observations{Bindings: []Binding{b(primary, m1), b(altBoth, m1)}, ChangeIPPort: Answered, ChangePort: Silent},
			NATUnknown, EndpointIndependent, Unknown, true},
		{"repeat of the primary does not count", Observations{Bindings: []Binding{b(primary, m1), b(primary, m2)}},
			NATUnknown, Unknown, Unknown, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Classify(c.obs)
			if r.NATType != c.nat || r.Mapping != c.mapping || r.Filtering != c.filtering {
				t.Errorf("got %q (mapping %s, filtering %s), want %q (mapping %s, filtering %s); reason %q",
					r.NATType, r.Mapping, r.Filtering, c.nat, c.mapping, c.filtering, r.Reason)
			}
			if (r.Reason != "") != c.wantReason {
				t.Errorf("reason %q, want one: %v", r.Reason, c.wantReason)
			}
			if r.UDP != (c.nat != NATUDPBlocked) {
				t.Errorf("UDP %v for %q", r.UDP, r.NATType)
			}
		})
	}
}

package netcheck

import (
	"fmt"
	"net/netip"
)

// NAT types in the words users know. JSON carries the same strings.
const (
	NATNone           = "none"
	NATFullCone       = "full cone"
	NATRestricted     = "restricted cone"
	NATPortRestricted = "port-restricted cone"
	NATSymmetric      = "symmetric"
	NATUDPBlocked     = "udp blocked"
	NATUnknown        = "unknown"
)

// Mapping and filtering behaviours in RFC 4787 terms.
const (
	EndpointIndependent = "endpoint-independent"
	AddressDependent    = "address-dependent"
	AddrPortDependent   = "address-and-port-dependent"
	// EndpointDependent is a mapping seen to vary when the test could not
	// say whether the address alone or address and port make it vary.
	EndpointDependent = "endpoint-dependent"
	Unknown           = "unknown"
)

// Binding is one STUN Binding exchange from the test socket: where it went
// and the public address the server saw (invalid when nobody answered).
type Binding struct {
	Dest   netip.AddrPort
	Mapped netip.AddrPort
}

// Outcome is the result of a filtering test: a request asking the server to
// answer from another address.
type Outcome int

const (
	// NotTested: the server cannot answer from that address, or ignored
	// the request. Observations.*Reason says why.
	NotTested Outcome = iota
	// Answered: the reply from the other address came in.
	Answered
	// Silent: no reply came in, though the server answered plain requests.
	Silent
)

func (o Outcome) String() string {
	switch o {
	case Answered:
		return "answered"
	case Silent:
		return "silent"
	}
	return "not tested"
}

// Observations is what netcheck saw; Classify turns it into the NAT's
// behaviour. Collecting them touches the network; classifying them does not.
type Observations struct {
	// Bindings are the plain Binding exchanges of the test socket, the
	// first one to the primary server.
	Bindings []Binding
	// Local reports that the first mapped address is this host's own
	// address and port: there is no NAT.
	Local bool
	// ChangeIPPort asked the primary server to reply from its other IP and
	// port (RFC 5780 test II); ChangePort from its other port only (test
	// III). Both go from a socket of their own that sends only to the
	// primary, so no earlier packet can have opened the NAT for the reply,
	// and the unsolicited replies cannot disturb the Bindings' mapping.
	ChangeIPPort       Outcome
	ChangeIPPortReason string
	ChangePort         Outcome
	ChangePortReason   string
}

// Result is the NAT's behaviour as far as the observations tell.
type Result struct {
	UDP       bool
	Mapping   string
	Filtering string
	NATType   string
	// Reason explains an unknown NAT type, or a mapping or filtering that
	// could not be tested.
	Reason string
}

// Classify names the NAT from what netcheck observed.
func Classify(o Observations) Result {
	if len(o.Bindings) == 0 || !o.Bindings[0].Mapped.IsValid() {
		return Result{Mapping: Unknown, Filtering: Unknown, NATType: NATUDPBlocked,
			Reason: "no STUN server answered over UDP: UDP to the internet is blocked, or the servers are down"}
	}
	r := Result{UDP: true}
	var mapReason, filtReason string
	r.Mapping, mapReason = mappingOf(o.Bindings)
	r.Filtering, filtReason = filteringOf(o)
	switch {
	case o.Local:
		r.NATType = NATNone
		r.Mapping = EndpointIndependent
		r.Reason = ""
		return r
	case r.Mapping == AddressDependent || r.Mapping == AddrPortDependent || r.Mapping == EndpointDependent:
		r.NATType = NATSymmetric
		return r
	case r.Mapping == Unknown:
		r.NATType = NATUnknown
		r.Reason = mapReason
		return r
	}
	switch r.Filtering {
	case EndpointIndependent:
		r.NATType = NATFullCone
	case AddressDependent:
		r.NATType = NATRestricted
	case AddrPortDependent:
		r.NATType = NATPortRestricted
	default:
		r.NATType = NATUnknown
		r.Reason = "the mapping does not depend on the destination (a cone NAT), but " + filtReason
	}
	return r
}

// mappingOf compares the public address each destination saw, pair by
// pair. Different ports of one server IP vary the mapping:
// address-and-port-dependent; only different IPs vary it: address-dependent.
func mappingOf(bs []Binding) (string, string) {
	var ok []Binding
	for _, b := range bs {
		if b.Mapped.IsValid() {
			ok = append(ok, b)
		}
	}
	compared, samePortPairs := false, false
	variesIP, variesPort, variesBoth := false, false, false
	for i, a := range ok {
		for _, b := range ok[i+1:] {
			if a.Dest == b.Dest {
				continue
			}
			compared = true
			differs := a.Mapped != b.Mapped
			switch {
			case a.Dest.Addr() == b.Dest.Addr():
				samePortPairs = true
				variesPort = variesPort || differs
			case a.Dest.Port() == b.Dest.Port():
				variesIP = variesIP || differs
			default:
				variesBoth = variesBoth || differs
			}
		}
	}
	switch {
	case !compared:
		return Unknown, "only one STUN address answered, so whether the mapping depends on the destination was not tested (start the coordinator with --stun-alt-listen, or give a second server with --stun)"
	case variesPort:
		return AddrPortDependent, ""
	case variesIP || variesBoth && samePortPairs:
		return AddressDependent, ""
	case variesBoth:
		return EndpointDependent, ""
	}
	return EndpointIndependent, ""
}

// filteringOf reads RFC 5780 tests II and III.
func filteringOf(o Observations) (string, string) {
	switch {
	case o.ChangeIPPort == Answered && o.ChangePort == Silent:
		// A NAT that lets in any address but filters ports does not exist;
		// a lost packet is likelier.
		return Unknown, "the filtering tests contradict each other (a reply from another address came in, one from another port did not): packet loss?"
	case o.ChangeIPPort == Answered:
		return EndpointIndependent, ""
	case o.ChangeIPPort == Silent && o.ChangePort == Answered:
		return AddressDependent, ""
	case o.ChangeIPPort == Silent && o.ChangePort == Silent:
		return AddrPortDependent, ""
	case o.ChangePort == Silent:
		return AddrPortDependent, ""
	case o.ChangeIPPort == NotTested && o.ChangePort == Answered:
		return Unknown, fmt.Sprintf("a reply from another port came in, and whether one from another address would was not tested (%s)", o.ChangeIPPortReason)
	case o.ChangeIPPort == Silent && o.ChangePort == NotTested:
		return Unknown, fmt.Sprintf("a reply from another address did not come in, and whether one from another port of the same address would was not tested (%s)", o.ChangePortReason)
	}
	reason := o.ChangeIPPortReason
	if reason == "" {
		reason = o.ChangePortReason
	}
	if reason == "" {
		reason = "no STUN server could answer from a second address"
	}
	return Unknown, "filtering was not tested: " + reason
}

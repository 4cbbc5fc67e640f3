package control

import (
	"strings"
	"testing"
)

func TestSignalValidate(t *testing.T) {
	good := []Signal{
		{Kind: SignalOffer, Session: "0123456789abcdef", Ufrag: "AbCd", Pwd: strings.Repeat("p", 22), NAT: "symmetric"},
		{Kind: SignalCandidate, Session: "s", Lane: LaneRelay, Candidate: "candidate:1 1 udp 16777215 203.0.113.10 50001 typ relay raddr 0.0.0.0 rport 0"},
		{Kind: "future-kind"},
	}
	for _, s := range good {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []Signal{
		{},
		{Kind: strings.Repeat("x", 17)},
		{Kind: "Offer"},
		{Kind: SignalCandidate, Candidate: strings.Repeat("c", 1025)},
		{Kind: SignalOffer, Ufrag: "a\nb"},
		{Kind: SignalOffer, Session: strings.Repeat("s", 65)},
		{Kind: SignalInfo, NAT: "caf\u00e9"},
	}
	for _, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

package control

import (
	"errors"
	"fmt"
)

// MaxSignalFrame bounds one signal frame on the stream, JSON included. The
// largest real signal is an offer or answer with ICE credentials and the
// NAT label, or a candidate line (an IPv6 server-reflexive candidate with
// its related address is about 150 bytes): both well under 1 KB. The
// coordinator drops larger signals.
const MaxSignalFrame = 4 << 10

// Field limits of a signal. ICE allows ufrag and pwd of up to 256
// characters (RFC 8839); the rest are far below their limits.
const (
	maxSignalKind      = 16
	maxSignalSession   = 64
	maxSignalICECred   = 256
	maxSignalCandidate = 1024
	maxSignalLabel     = 32 // Lane and NAT
)

// Validate checks a signal's fields against their limits: lengths, and
// printable ASCII only, so nothing a peer sends can grow a log or forge a
// line. Kinds this build does not know pass (agents ignore them), if they
// look like one: lowercase letters and '-'.
func (s *Signal) Validate() error {
	if s.Kind == "" || len(s.Kind) > maxSignalKind {
		return fmt.Errorf("signal kind: want 1 to %d characters, got %d", maxSignalKind, len(s.Kind))
	}
	for i := 0; i < len(s.Kind); i++ {
		if c := s.Kind[i]; (c < 'a' || c > 'z') && c != '-' {
			return errors.New("signal kind: want lowercase letters and '-'")
		}
	}
	for _, f := range []struct {
		name string
		v    string
		max  int
	}{
		{"session", s.Session, maxSignalSession},
		{"ufrag", s.Ufrag, maxSignalICECred},
		{"pwd", s.Pwd, maxSignalICECred},
		{"candidate", s.Candidate, maxSignalCandidate},
		{"lane", s.Lane, maxSignalLabel},
		{"nat", s.NAT, maxSignalLabel},
	} {
		if len(f.v) > f.max {
			return fmt.Errorf("signal %s: %d bytes, at most %d", f.name, len(f.v), f.max)
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c < 0x20 || c > 0x7e {
				return fmt.Errorf("signal %s: not printable ASCII", f.name)
			}
		}
	}
	return nil
}

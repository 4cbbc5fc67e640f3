package control

import "testing"

func TestNormalizeDNSDomain(t *testing.T) {
	good := map[string]string{
		"mesh.internal":  "mesh.internal",
		"Mesh.Internal.": "mesh.internal",
		"corp":           "corp",
		"a-1.b2.example": "a-1.b2.example",
	}
	for in, want := range good {
		if got, err := NormalizeDNSDomain(in); err != nil || got != want {
			t.Errorf("NormalizeDNSDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	long := ""
	for range 40 {
		long += "abcd."
	}
	for _, bad := range []string{"", ".", "a..b", ".mesh", "-a.b", "a-.b", "a_b.c", "a b", "ünï.code",
		"mesh.local", "local", "64.100.in-addr.arpa", long + "x", "x\n.internal", "*.internal"} {
		if got, err := NormalizeDNSDomain(bad); err == nil {
			t.Errorf("NormalizeDNSDomain(%q) = %q, want an error", bad, got)
		}
	}
}

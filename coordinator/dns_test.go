package coordinator

import (
	"strconv"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// The mesh's DNS domain reaches agents in the netmap, and renames and
// removals (what the agents' resolvers answer from) reach them within a
// second.
func TestNetmapDNSDomainRenameRemove(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	ca := dialStream(t, base, a.Credential)
	m := readMsg(t, ca)
	if m.Netmap == nil || m.Netmap.DNS == nil || m.Netmap.DNS.Domain != control.DefaultDNSDomain {
		t.Fatalf("netmap DNS: %+v", m.Netmap)
	}

	start := time.Now()
	if _, err := s.RenameNode(t.Context(), strconv.FormatUint(b.NodeID, 10), "gamma"); err != nil {
		t.Fatal(err)
	}
	if n := readUpsert(t, ca, b.NodeID); n.Name != "gamma" {
		t.Fatalf("rename delta: %+v", n)
	}
	took := time.Since(start)
	t.Logf("rename reached the peer in %v", took)
	if took > time.Second {
		t.Errorf("rename took %v, want under 1 s", took)
	}

	start = time.Now()
	if _, err := s.RemoveNode(t.Context(), "gamma"); err != nil {
		t.Fatal(err)
	}
	for removed := false; !removed; {
		m := readMsg(t, ca)
		if m.Delta != nil {
			for _, id := range m.Delta.Remove {
				removed = removed || id == b.NodeID
			}
		}
	}
	took = time.Since(start)
	t.Logf("removal reached the peer in %v", took)
	if took > time.Second {
		t.Errorf("removal took %v, want under 1 s", took)
	}
}

func TestDNSDomainConfig(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), DNSDomain: "Corp.Example.", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cfg.DNSDomain != "corp.example" {
		t.Fatalf("domain %q, want corp.example", s.cfg.DNSDomain)
	}
	for _, bad := range []string{"bad_domain", "mesh.local", "a..b"} {
		if s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), DNSDomain: bad}); err == nil {
			s.Close()
			t.Errorf("domain %q accepted", bad)
		}
	}
}

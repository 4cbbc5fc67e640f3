package coordinator

import (
	"database/sql"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// TestOverlayPrefix6: on both engines a new store draws a ULA /48 that a
// second handle (another process, a replica) reads back unchanged, two
// stores draw different ones, and every node's IPv6 address is its IPv4
// address inside it, the same through re-admission.
func TestOverlayPrefix6(t *testing.T) {
	for _, e := range storeEngines(t) {
		t.Run(e.name, func(t *testing.T) {
			if e.setup != nil {
				e.setup(t)
			}
			st, reopen := e.open(t)
			p := st.OverlayPrefix6()
			if !control.ValidULAPrefix(p) {
				t.Fatalf("prefix %v is not a ULA /48", p)
			}
			if q := reopen(t).OverlayPrefix6(); q != p {
				t.Fatalf("second handle reads %v, first %v", q, p)
			}
			if other, _ := e.open(t); other.OverlayPrefix6() == p {
				t.Fatalf("two stores drew the same prefix %v", p)
			}

			ctx := t.Context()
			key := newKey(t, st, true, 0)
			pub := newPublicKey(t)
			reg, err := st.Register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: pub, Hostname: "a"})
			if err != nil {
				t.Fatal(err)
			}
			want := control.OverlayAddr6(p, netip.MustParseAddr(reg.Node.IP)).String()
			if reg.Node.IP6 != want || !p.Contains(netip.MustParseAddr(want)) {
				t.Fatalf("IP6 %q for %s, want %s in %v", reg.Node.IP6, reg.Node.IP, want, p)
			}
			again, err := reopen(t).Register(ctx, control.RegisterRequest{Credential: reg.Credential, PublicKey: pub, Hostname: "a"})
			if err != nil || again.Node.IP6 != want {
				t.Fatalf("re-admitted by credential: IP6 %q (%v), want %s", again.Node.IP6, err, want)
			}
			proven, err := st.register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: pub, Hostname: "a"}, true)
			if err != nil || proven.Node.IP6 != want {
				t.Fatalf("re-admitted by key: IP6 %q (%v), want %s", proven.Node.IP6, err, want)
			}
			nodes, err := st.ListNodes(ctx)
			if err != nil || len(nodes) != 1 || nodes[0].IP6 != want {
				t.Fatalf("ListNodes: %+v (%v)", nodes, err)
			}
			r, err := st.FindNode(ctx, want)
			if err != nil || r.ID != reg.Node.ID || r.IP6 != want {
				t.Fatalf("FindNode(%s): %+v (%v)", want, r, err)
			}
		})
	}
}

// TestMigrateOverlayPrefix6: a store made before IPv6 (schema version 6)
// gets a prefix when opened, and its nodes get addresses in it.
func TestMigrateOverlayPrefix6(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	steps := append([]string{}, migrations[:6]...)
	steps = append(steps, `CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (6)`,
		`INSERT INTO nodes (name, ip, public_key, credential_hash, created_at) VALUES ('old', '100.64.0.7', '`+newPublicKey(t)+`', x'', 0)`)
	for _, q := range steps {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := st.OverlayPrefix6()
	if !control.ValidULAPrefix(p) {
		t.Fatalf("migrated store's prefix %v is not a ULA /48", p)
	}
	nodes, err := st.ListNodes(t.Context())
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes after migration: %+v (%v)", nodes, err)
	}
	if want := control.OverlayAddr6(p, netip.MustParseAddr("100.64.0.7")).String(); nodes[0].IP6 != want {
		t.Fatalf("old node's IP6 %q, want %s", nodes[0].IP6, want)
	}
}

// The register answer and the stream carry IPv6 overlay addresses: self,
// peers in the netmap, and nodes in deltas.
func TestStreamCarriesIP6(t *testing.T) {
	s, base := startServer(t, t.TempDir())
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	b := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "beta", PublicKey: newPublicKey(t)})
	p6 := s.store.OverlayPrefix6()
	if a.Prefix6 != p6.String() || a.IP6 != control.OverlayAddr6(p6, netip.MustParseAddr(a.IP)).String() {
		t.Fatalf("register answer: ip6 %q prefix6 %q, want in %v", a.IP6, a.Prefix6, p6)
	}
	ca := dialStream(t, base, a.Credential)
	m := readMsg(t, ca)
	if m.Netmap == nil || m.Netmap.Self.IP6 != a.IP6 || len(m.Netmap.Peers) != 1 || m.Netmap.Peers[0].IP6 != b.IP6 {
		t.Fatalf("netmap: %+v", m.Netmap)
	}
	c := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "gamma", PublicKey: newPublicKey(t)})
	if n := readUpsert(t, ca, c.NodeID); n.IP6 != c.IP6 || c.IP6 == "" {
		t.Fatalf("delta for gamma: %+v, want ip6 %q", n, c.IP6)
	}
	if a.IP6 == b.IP6 || b.IP6 == c.IP6 {
		t.Fatalf("two nodes share an IPv6 address: %s %s %s", a.IP6, b.IP6, c.IP6)
	}
}

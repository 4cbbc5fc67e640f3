package coordinator

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"

	"github.com/meshvpn/meshvpn/coordinator/store"
)

// TestIPHoldback: a removed node's address is not handed out again until
// the hold-back is over, then it is (without a restart), and a restart
// within the hold-back does not hand it out either.
func TestIPHoldback(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st.now = func() time.Time { return now }
	st.SetIPHoldback(time.Hour)
	ctx := t.Context()
	k, err := st.CreateAuthKey(ctx, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(st *Store, name string) string {
		t.Helper()
		r, err := st.Register(ctx, control.RegisterRequest{AuthKey: k.Key, Hostname: name, PublicKey: newPublicKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		return r.Node.IP
	}
	a, b := reg(st, "a"), reg(st, "b")
	if _, err := st.RemoveNode(ctx, "a", reasonOperator); err != nil {
		t.Fatal(err)
	}
	if c := reg(st, "c"); c == a {
		t.Fatalf("a's address %s handed out again at once", a)
	}

	// A restart within the hold-back still skips it, from the bottom up.
	st.Close()
	if st, err = OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetIPHoldback(time.Hour)
	st.now = func() time.Time { return now }
	if d := reg(st, "d"); d == a || d == b {
		t.Fatalf("after a restart d got %s (a had %s, b %s)", d, a, b)
	}

	now = now.Add(time.Hour + time.Second)
	if e := reg(st, "e"); e != a {
		t.Fatalf("after the hold-back e got %s, want a's %s", e, a)
	}
	if f := reg(st, "f"); f == a {
		t.Fatalf("a's address handed out twice")
	}
}

// TestIPHoldbackNone: with no hold-back an address is reused at once.
func TestIPHoldbackNone(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetIPHoldback(0)
	ctx := context.Background()
	k, _ := st.CreateAuthKey(ctx, true, 0)
	r1, err := st.Register(ctx, control.RegisterRequest{AuthKey: k.Key, Hostname: "a", PublicKey: newPublicKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RemoveNode(ctx, "a", reasonOperator); err != nil {
		t.Fatal(err)
	}
	r2, err := st.Register(ctx, control.RegisterRequest{AuthKey: k.Key, Hostname: "b", PublicKey: newPublicKey(t)})
	if err != nil || r2.Node.IP != r1.Node.IP {
		t.Fatalf("no hold-back: b got %s (%v), want %s", r2.Node.IP, err, r1.Node.IP)
	}
}

// TestMigrateHeldIPs: a store made by a build before the hold-back (schema
// version 2) gets the held_ips table on open, keeps its nodes, and holds
// addresses from then on.
func TestMigrateHeldIPs(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{store.SQLiteMigrations[0], store.SQLiteMigrations[1],
		`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (2)`,
		`INSERT INTO nodes (name, ip, public_key, credential_hash, created_at) VALUES ('old', '100.64.0.1', '` + newPublicKey(t) + `', x'', 0)`,
	} {
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
	var v int
	if err := st.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(store.SQLiteMigrations) {
		t.Fatalf("schema version %d (%v), want %d", v, err, len(store.SQLiteMigrations))
	}
	if _, err := st.RemoveNode(t.Context(), "old", reasonOperator); err != nil {
		t.Fatal(err)
	}
	k, _ := st.CreateAuthKey(t.Context(), true, 0)
	r, err := st.Register(t.Context(), control.RegisterRequest{AuthKey: k.Key, Hostname: "new", PublicKey: newPublicKey(t)})
	if err != nil || r.Node.IP == "100.64.0.1" {
		t.Fatalf("new node after the migration: %s (%v), want another address than the removed node's", r.Node.IP, err)
	}
}

package coordinator

import (
	"context"
	"testing"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// TestPostgresStoreSurvivesServerRestart: when PostgreSQL restarts under a
// running store (its connections broken), the next registration works
// without reopening the store: a write transaction that cannot begin on a
// broken connection tries another.
func TestPostgresStoreSurvivesServerRestart(t *testing.T) {
	c := pgtest.Start(t, "127.0.0.1", nil, nil)
	st, err := OpenStoreAt("", c.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	key := newKey(t, st, true, 0)
	suiteRegister(t, st, key, "before")
	c.Restart(t)
	if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: newPublicKey(t), Hostname: "after"}); err != nil {
		t.Fatalf("register after PostgreSQL restart: %v", err)
	}
	nodes, err := st.ListNodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes after restart: %d, %v", len(nodes), err)
	}
}

package coordinator

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// TestPolicyNotifyAtomic: a policy change and the notification that tells
// the other replicas commit together or not at all. Replicas reload the
// policy only when notified (or when their listener reconnects), so a
// change stored without its notification (a crash between the two) would
// leave them enforcing the old policy until they restart. The test makes
// the notification fail (a store user that may not call pg_notify): the
// write must fail with it and leave the stored policy as it was.
func TestPolicyNotifyAtomic(t *testing.T) {
	cluster := pgtest.Start(t, "127.0.0.1", nil, nil)
	url := cluster.NewDB(t)
	ctx := t.Context()
	owner, err := OpenStoreAt("", url)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	const before = `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}`
	if err := owner.SetPolicy(ctx, []byte(before)); err != nil {
		t.Fatal(err)
	}

	// A role that may do everything the store does but NOTIFY.
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	for _, q := range []string{
		`CREATE ROLE nonotify LOGIN`,
		`GRANT USAGE, CREATE ON SCHEMA public TO nonotify`,
		`GRANT ALL ON ALL TABLES IN SCHEMA public TO nonotify`,
		`GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO nonotify`,
		`REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	st, err := OpenStoreAt("", strings.Replace(url, pgtest.User+"@", "nonotify@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	if err := st.SetPolicy(ctx, []byte(`{"acls": []}`)); err == nil {
		t.Fatal("SetPolicy succeeded although its notification could not be sent")
	}
	if got, err := owner.Policy(ctx); err != nil || string(got) != before {
		t.Errorf("after a SetPolicy whose notification failed, the store holds %q (%v), want the old policy %q", got, err, before)
	}
	if err := st.ClearPolicy(ctx); err == nil {
		t.Fatal("ClearPolicy succeeded although its notification could not be sent")
	}
	if got, err := owner.Policy(ctx); err != nil || string(got) != before {
		t.Errorf("after a ClearPolicy whose notification failed, the store holds %q (%v), want the old policy %q", got, err, before)
	}
}

package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/internal/pgtest"
)

// storeEngine opens fresh, empty stores of one engine; reopen opens another
// handle on the store st was opened with (a second process, or a replica).
type storeEngine struct {
	name   string
	open   func(t *testing.T) (st *Store, reopen func(t *testing.T) *Store)
	shared bool // keeps the shared secrets
	// setup, when not nil, runs once before the engine's behaviours, on
	// the test that spans them (say, to start a server).
	setup func(t *testing.T)
}

// storeEngines are the engines the shared suite runs against. PostgreSQL
// needs its server binaries (Debian package postgresql); without them its
// half of the suite is skipped.
func storeEngines(t *testing.T) []storeEngine {
	sqlite := storeEngine{name: "sqlite", open: func(t *testing.T) (*Store, func(*testing.T) *Store) {
		dir := t.TempDir()
		open := func(t *testing.T) *Store {
			st, err := OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(t), open
	}}
	var cluster *pgtest.Cluster
	pg := storeEngine{name: "postgres", shared: true, setup: func(t *testing.T) {
		cluster = pgtest.Start(t, "127.0.0.1", nil, nil)
	}, open: func(t *testing.T) (*Store, func(*testing.T) *Store) {
		url := cluster.NewDB(t)
		open := func(t *testing.T) *Store {
			st, err := OpenStoreAt("", url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(t), open
	}}
	return []storeEngine{sqlite, pg}
}

func suiteRegister(t *testing.T, st *Store, key, host string) Registration {
	t.Helper()
	reg, err := st.Register(context.Background(), control.RegisterRequest{AuthKey: key, PublicKey: newPublicKey(t), Hostname: host})
	if err != nil {
		t.Fatalf("register %s: %v", host, err)
	}
	return reg
}

// storeBehaviours is the shared suite: what every engine must do alike.
var storeBehaviours = []struct {
	name string
	run  func(t *testing.T, e storeEngine, st *Store, reopen func(*testing.T) *Store)
}{
	{"RegisterAndReadmit", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		ctx := context.Background()
		key := newKey(t, st, true, 0)
		pub := newPublicKey(t)
		reg, err := st.Register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: pub, Hostname: "Web 1"})
		if err != nil || !reg.Created || reg.Node.Name != "web-1" || reg.Node.IP != "100.64.0.1" {
			t.Fatalf("first registration: %+v, %v", reg, err)
		}
		again, err := st.Register(ctx, control.RegisterRequest{Credential: reg.Credential, PublicKey: pub})
		if err != nil || again.Created || again.Node.ID != reg.Node.ID || again.Credential != reg.Credential {
			t.Fatalf("re-admission by credential: %+v, %v", again, err)
		}
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: pub}); !errors.Is(err, ErrPublicKeyInUse) {
			t.Fatalf("known key without proof: %v, want ErrPublicKeyInUse", err)
		}
		proven, err := st.register(ctx, control.RegisterRequest{AuthKey: key, PublicKey: pub}, true)
		if err != nil || proven.Created || proven.Node.ID != reg.Node.ID || proven.Node.IP != reg.Node.IP || proven.Credential == reg.Credential {
			t.Fatalf("re-admission by key with proof: %+v, %v", proven, err)
		}
		if _, err := st.AuthenticateNode(ctx, reg.Credential); !errors.Is(err, ErrBadCredential) {
			t.Fatalf("replaced credential: %v, want ErrBadCredential", err)
		}
		if _, err := st.Register(ctx, control.RegisterRequest{Credential: proven.Credential, PublicKey: newPublicKey(t)}); !errors.Is(err, ErrCredentialKeyMismatch) {
			t.Fatalf("credential with another key: %v", err)
		}
		if r := suiteRegister(t, st, key, "web-1"); r.Node.Name != "web-1-2" || r.Node.IP != "100.64.0.2" {
			t.Fatalf("second web-1: %s %s, want web-1-2 100.64.0.2", r.Node.Name, r.Node.IP)
		}
	}},
	{"KeyUses", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		ctx := context.Background()
		one := newKey(t, st, false, 0)
		suiteRegister(t, st, one, "a")
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: one, PublicKey: newPublicKey(t)}); !errors.Is(err, ErrAuthKeyUsed) {
			t.Fatalf("single-use key twice: %v", err)
		}
		capped, err := st.CreateAuthKeyWith(ctx, AuthKeyOptions{MaxUses: 2, Tags: []string{"tag:ci"}, Ephemeral: true})
		if err != nil {
			t.Fatal(err)
		}
		r := suiteRegister(t, st, capped.Key, "b")
		if !r.Ephemeral || len(r.Node.Tags) != 1 || r.Node.Tags[0] != "tag:ci" {
			t.Fatalf("capped key's node: %+v", r)
		}
		suiteRegister(t, st, capped.Key, "c")
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: capped.Key, PublicKey: newPublicKey(t)}); !errors.Is(err, ErrAuthKeyUsedUp) {
			t.Fatalf("third use of --max-uses 2: %v", err)
		}
		keys, err := st.ListAuthKeys(ctx)
		if err != nil || len(keys) != 2 || keys[0].Uses != 1 || keys[1].Uses != 2 || keys[1].State(st.Now()) != "used" || !keys[1].Reusable {
			t.Fatalf("listed keys: %+v, %v", keys, err)
		}
		ids, err := st.ephemeralMembers(ctx)
		if err != nil || len(ids) != 2 {
			t.Fatalf("ephemeral members: %v, %v", ids, err)
		}
		revoked := newKey(t, st, true, 0)
		list, _ := st.ListAuthKeys(ctx)
		if err := st.RevokeAuthKey(ctx, list[len(list)-1].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: revoked, PublicKey: newPublicKey(t)}); !errors.Is(err, ErrAuthKeyRevoked) {
			t.Fatalf("revoked key: %v", err)
		}
		if err := st.RevokeAuthKey(ctx, 999); !errors.Is(err, ErrAuthKeyNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		expiring := newKey(t, st, true, time.Minute)
		st.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: expiring, PublicKey: newPublicKey(t)}); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired key: %v", err)
		}
		if _, err := st.Register(ctx, control.RegisterRequest{AuthKey: "mvk-nope", PublicKey: newPublicKey(t)}); !errors.Is(err, ErrUnknownAuthKey) {
			t.Fatalf("unknown key: %v", err)
		}
	}},
	{"RemovalTombstoneAndHeldIP", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		ctx := context.Background()
		now := time.Now()
		st.now = func() time.Time { return now }
		st.SetIPHoldback(time.Hour)
		key := newKey(t, st, true, 0)
		a := suiteRegister(t, st, key, "a")
		b := suiteRegister(t, st, key, "b")
		if _, err := st.RemoveNode(ctx, "a", "operator"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AuthenticateNode(ctx, a.Credential); !errors.Is(err, ErrNodeRemoved) {
			t.Fatalf("removed node's credential: %v, want ErrNodeRemoved", err)
		}
		if _, err := st.AuthenticateNode(ctx, b.Credential[:len(b.Credential)-2]+"xx"); !errors.Is(err, ErrBadCredential) {
			t.Fatalf("forged credential: %v", err)
		}
		if _, err := st.RemoveNode(ctx, "a", "operator"); !errors.Is(err, ErrNodeNotFound) {
			t.Fatalf("removing twice: %v", err)
		}
		c := suiteRegister(t, st, key, "a")
		if c.Node.Name != "a" || c.Node.IP == a.Node.IP {
			t.Fatalf("during hold-back: %s %s; want name a free, address %s held", c.Node.Name, c.Node.IP, a.Node.IP)
		}
		now = now.Add(2 * time.Hour)
		if d := suiteRegister(t, st, key, "d"); d.Node.IP != a.Node.IP {
			t.Fatalf("after hold-back got %s, want the freed %s", d.Node.IP, a.Node.IP)
		}
		// Removing by address, and again holding it.
		if _, err := st.RemoveNode(ctx, b.Node.IP, "operator"); err != nil {
			t.Fatal(err)
		}
		if e := suiteRegister(t, st, key, "e"); e.Node.IP == b.Node.IP {
			t.Fatalf("held address %s handed out again", b.Node.IP)
		}
	}},
	{"ExpireRename", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		ctx := context.Background()
		key := newKey(t, st, true, 0)
		a := suiteRegister(t, st, key, "a")
		b := suiteRegister(t, st, key, "b")
		r, err := st.ExpireNode(ctx, fmt.Sprint(a.Node.ID))
		if err != nil || !r.Expired() {
			t.Fatalf("expire: %+v, %v", r, err)
		}
		if _, err := st.AuthenticateNode(ctx, a.Credential); !errors.Is(err, ErrNodeExpired) {
			t.Fatalf("expired node's credential: %v", err)
		}
		nodes, err := st.ListNodes(ctx)
		if err != nil || len(nodes) != 1 || nodes[0].ID != b.Node.ID {
			t.Fatalf("members after expiry: %+v, %v", nodes, err)
		}
		recs, err := st.NodeRecords(ctx)
		if err != nil || len(recs) != 2 || !recs[0].Expired() || recs[1].AuthKeyID == 0 {
			t.Fatalf("records: %+v, %v", recs, err)
		}
		if _, err := st.RenameNode(ctx, "b", "a"); !errors.Is(err, ErrNameTaken) {
			t.Fatalf("rename onto a taken name: %v", err)
		}
		if _, err := st.RenameNode(ctx, "b", "Bad Name"); !errors.Is(err, errBadName) {
			t.Fatalf("bad name: %v", err)
		}
		if r, err := st.RenameNode(ctx, "b", "db"); err != nil || r.Name != "db" {
			t.Fatalf("rename: %+v, %v", r, err)
		}
		if r, err := st.FindNode(ctx, "db"); err != nil || r.ID != b.Node.ID {
			t.Fatalf("find renamed: %+v, %v", r, err)
		}
	}},
	{"PolicyAndNetmapVersion", func(t *testing.T, _ storeEngine, st *Store, reopen func(*testing.T) *Store) {
		ctx := context.Background()
		if src, err := st.Policy(ctx); err != nil || src != nil {
			t.Fatalf("no policy: %q, %v", src, err)
		}
		pol := []byte(`{"acls":[]}`)
		for range 2 {
			if err := st.SetPolicy(ctx, pol); err != nil {
				t.Fatal(err)
			}
		}
		if src, err := reopen(t).Policy(ctx); err != nil || !bytes.Equal(src, pol) {
			t.Fatalf("stored policy: %q, %v", src, err)
		}
		if err := st.ClearPolicy(ctx); err != nil {
			t.Fatal(err)
		}
		if src, _ := st.Policy(ctx); src != nil {
			t.Fatalf("cleared policy: %q", src)
		}
		if _, ok, err := st.loadNetmapVersion(ctx); ok || err != nil {
			t.Fatalf("fresh store has a version: %v %v", ok, err)
		}
		key := newKey(t, st, true, 0)
		a := suiteRegister(t, st, key, "a")
		seenAt := time.UnixMilli(time.Now().UnixMilli()).UTC()
		v := netmapVersion{epoch: "e1", seq: 42, digest: 0xfeedface12345678, batch: []uint64{a.Node.ID}, keepFrom: 42}
		if _, err := st.saveSeen(ctx, map[uint64]hub.Seen{a.Node.ID: {Online: true, LastSeen: seenAt}}, &v); err != nil {
			t.Fatal(err)
		}
		v.seq, v.batch = v.seq+1, []uint64{7, 8}
		if _, err := st.saveSeen(ctx, nil, &v); err != nil {
			t.Fatal(err)
		}
		got, ok, err := reopen(t).loadNetmapVersion(ctx)
		if err != nil || !ok || got.epoch != v.epoch || got.seq != v.seq || got.digest != v.digest {
			t.Fatalf("netmap version: %+v %v %v, want %+v", got, ok, err, v)
		}
		// The batches the ring holds come back, oldest first; those it
		// dropped (before keepFrom) are gone.
		batches, err := reopen(t).loadBatches(ctx, "e1", v.seq)
		if err != nil || fmt.Sprint(batches) != fmt.Sprintf("[{42 [%d]} {43 [7 8]}]", a.Node.ID) {
			t.Fatalf("netmap batches: %v %v", batches, err)
		}
		v.seq, v.batch, v.keepFrom = v.seq+1, []uint64{9}, 44
		if _, err := st.saveSeen(ctx, nil, &v); err != nil {
			t.Fatal(err)
		}
		if batches, err := st.loadBatches(ctx, "e1", v.seq); err != nil || fmt.Sprint(batches) != "[{44 [9]}]" {
			t.Fatalf("netmap batches after the ring moved on: %v %v", batches, err)
		}
		nodes, err := st.ListNodes(ctx)
		if err != nil || len(nodes) != 1 || !nodes[0].Online || !nodes[0].LastSeen.Equal(seenAt) {
			t.Fatalf("seen state: %+v, %v", nodes, err)
		}
	}},
	{"ChangedAtOnlyWhenPeersSeeIt", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		// An online write dates the node (changed_at, what a replica's
		// resume sends) only when peers see a change: online flag or
		// address. An agent moving to another replica from the same
		// address is no change; else a fail-over of more than half the
		// mesh sends everyone after that half a full netmap.
		if !st.fansOut() {
			t.Skip("only a store shared by replicas dates online changes")
		}
		ctx := context.Background()
		id := suiteRegister(t, st, newKey(t, st, true, 0), "a").Node.ID
		steps := []struct {
			what    string
			replica string
			seen    hub.Seen
			changed bool
		}{
			{"online", "r1", hub.Seen{Online: true, From: "198.51.100.1"}, true},
			{"moved to r2 from the same address", "r2", hub.Seen{Online: true, From: "198.51.100.1"}, false},
			{"same replica, same address again", "r2", hub.Seen{Online: true, From: "198.51.100.1"}, false},
			{"new address", "r2", hub.Seen{Online: true, From: "198.51.100.2"}, true},
			{"offline", "r2", hub.Seen{}, true},
			{"offline again", "r2", hub.Seen{}, false},
			{"online again", "r1", hub.Seen{Online: true, From: "198.51.100.2"}, true},
		}
		for _, s := range steps {
			time.Sleep(5 * time.Millisecond)
			mark := time.Now().UnixMilli() // the test's and the database's clock are the host's
			time.Sleep(5 * time.Millisecond)
			st.replica = s.replica
			s.seen.LastSeen = time.Now().UTC()
			if _, err := st.saveSeen(ctx, map[uint64]hub.Seen{id: s.seen}, nil); err != nil {
				t.Fatalf("%s: %v", s.what, err)
			}
			ids, err := st.changedSince(ctx, mark)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(ids, id); got != s.changed {
				t.Fatalf("%s: node dated as changed: %v, want %v", s.what, got, s.changed)
			}
		}
	}},
	{"NodeCap", func(t *testing.T, _ storeEngine, st *Store, _ func(*testing.T) *Store) {
		st.maxNodes = 2
		key := newKey(t, st, true, 0)
		suiteRegister(t, st, key, "a")
		suiteRegister(t, st, key, "b")
		_, err := st.Register(context.Background(), control.RegisterRequest{AuthKey: key, PublicKey: newPublicKey(t)})
		if !errors.Is(err, errMeshFull) {
			t.Fatalf("third node with a cap of 2: %v", err)
		}
	}},
	{"SharedSecrets", func(t *testing.T, e storeEngine, st *Store, reopen func(*testing.T) *Store) {
		ctx := context.Background()
		dirA, dirB := t.TempDir(), t.TempDir()
		idA, err := loadServerIdentity(ctx, st, dirA)
		if err != nil {
			t.Fatal(err)
		}
		idB, err := loadServerIdentity(ctx, reopen(t), dirB)
		if err != nil {
			t.Fatal(err)
		}
		turnA, errA := loadServerTURNSecret(ctx, st, dirA)
		turnB, errB := loadServerTURNSecret(ctx, reopen(t), dirB)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		// With a shared store two state directories (two replicas) get one
		// identity and TURN secret; with SQLite each directory has its own.
		if same := idA.pub == idB.pub && bytes.Equal(turnA, turnB); same != e.shared {
			t.Fatalf("secrets the same in two state dirs: %v, want %v", same, e.shared)
		}
	}},
	{"ConcurrentRegistrationsTwoHandles", func(t *testing.T, _ storeEngine, st *Store, reopen func(*testing.T) *Store) {
		// Two handles on one store (two coordinators on one database)
		// register at once: every node gets its own address and name, and
		// none is refused.
		const perHandle = 25
		key := newKey(t, st, true, 0)
		handles := []*Store{st, reopen(t)}
		var wg sync.WaitGroup
		errs := make(chan error, 2*perHandle)
		for _, h := range handles {
			for range perHandle {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := h.Register(context.Background(), control.RegisterRequest{AuthKey: key, PublicKey: newPublicKey(t), Hostname: "n"})
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent registration: %v", err)
			}
		}
		nodes, err := st.ListNodes(context.Background())
		if err != nil || len(nodes) != 2*perHandle {
			t.Fatalf("nodes: %d, %v", len(nodes), err)
		}
		ips, names := map[string]bool{}, map[string]bool{}
		for _, n := range nodes {
			if ips[n.IP] || names[n.Name] {
				t.Fatalf("address %s or name %s handed out twice", n.IP, n.Name)
			}
			ips[n.IP], names[n.Name] = true, true
		}
	}},
}

// TestStoreSuite runs the shared store behaviours against every engine.
func TestStoreSuite(t *testing.T) {
	for _, e := range storeEngines(t) {
		t.Run(e.name, func(t *testing.T) {
			if e.setup != nil {
				e.setup(t)
			}
			for _, b := range storeBehaviours {
				t.Run(b.name, func(t *testing.T) {
					st, reopen := e.open(t)
					b.run(t, e, st, reopen)
				})
			}
		})
	}
}

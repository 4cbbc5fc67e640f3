package coordinator

import (
	"context"
	"os"

	"github.com/meshvpn/meshvpn/coordinator/admin"
)

// Admin changes nodes on behalf of the admin commands. When a coordinator
// serves the state directory, it asks that server through its admin socket,
// so connected agents learn of the change at once; otherwise it writes the
// store directly, holding the state dir's lock so no server starts
// meanwhile (a server loads the store when it starts).
type Admin struct {
	dir   string
	store *Store        // direct mode
	lock  *os.File      // direct mode
	sock  *admin.Client // through the running server
}

// OpenAdmin picks the way to change nodes in stateDir. Close it when done.
func OpenAdmin(ctx context.Context, stateDir string) (*Admin, error) {
	return OpenAdminStore(ctx, stateDir, "")
}

// OpenAdminStore is OpenAdmin for a server whose store is named by store
// (see OpenStoreAt): with no server on stateDir, the changes go there.
func OpenAdminStore(ctx context.Context, stateDir, store string) (*Admin, error) {
	lock, free, err := lockShared(stateDir)
	if err != nil {
		return nil, err
	}
	if free {
		st, err := OpenStoreAt(stateDir, store)
		if err != nil {
			lock.Close()
			return nil, err
		}
		return &Admin{dir: stateDir, store: st, lock: lock}, nil
	}
	c, err := admin.Dial(ctx, stateDir)
	if err != nil {
		return nil, err
	}
	return &Admin{dir: stateDir, sock: c}, nil
}

// Live tells whether changes go through a running server.
func (a *Admin) Live() bool { return a.store == nil }

// Close releases the store and the lock.
func (a *Admin) Close() error {
	if a.store == nil {
		return nil
	}
	err := a.store.Close()
	a.lock.Close()
	return err
}

// RemoveNode removes the node named by ref (ID, name or overlay IP).
func (a *Admin) RemoveNode(ctx context.Context, ref string) (NodeRecord, error) {
	if a.store != nil {
		return a.store.RemoveNode(ctx, ref, reasonOperator)
	}
	return a.call(ctx, admin.PathRemove, admin.Request{Node: ref})
}

// ExpireNode expires the node named by ref.
func (a *Admin) ExpireNode(ctx context.Context, ref string) (NodeRecord, error) {
	if a.store != nil {
		return a.store.ExpireNode(ctx, ref)
	}
	return a.call(ctx, admin.PathExpire, admin.Request{Node: ref})
}

// RenameNode renames the node named by ref.
func (a *Admin) RenameNode(ctx context.Context, ref, name string) (NodeRecord, error) {
	if a.store != nil {
		return a.store.RenameNode(ctx, ref, name)
	}
	return a.call(ctx, admin.PathRename, admin.Request{Node: ref, Name: name})
}

func (a *Admin) call(ctx context.Context, path string, req admin.Request) (NodeRecord, error) {
	var rec NodeRecord
	if err := a.sock.Call(ctx, path, req, &rec); err != nil {
		return NodeRecord{}, err
	}
	return rec, nil
}

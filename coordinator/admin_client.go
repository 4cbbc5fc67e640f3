package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// Admin changes nodes on behalf of the admin commands. When a coordinator
// serves the state directory, it asks that server through its admin socket,
// so connected agents learn of the change at once; otherwise it writes the
// store directly, holding the state dir's lock so no server starts
// meanwhile (a server loads the store when it starts).
type Admin struct {
	dir   string
	store *Store   // direct mode
	lock  *os.File // direct mode
	http  *http.Client
}

// adminDialWait bounds how long an admin command waits for the admin socket
// of a server that holds the lock but is still starting.
const adminDialWait = 10 * time.Second

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
	path := filepath.Join(stateDir, AdminSocket)
	a := &Admin{dir: stateDir, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
	deadline := time.Now().Add(adminDialWait)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return a, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("a coordinator holds %s but its admin socket does not answer: %w", stateDir, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
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
	return a.call(ctx, adminPathRemove, adminRequest{Node: ref})
}

// ExpireNode expires the node named by ref.
func (a *Admin) ExpireNode(ctx context.Context, ref string) (NodeRecord, error) {
	if a.store != nil {
		return a.store.ExpireNode(ctx, ref)
	}
	return a.call(ctx, adminPathExpire, adminRequest{Node: ref})
}

// RenameNode renames the node named by ref.
func (a *Admin) RenameNode(ctx context.Context, ref, name string) (NodeRecord, error) {
	if a.store != nil {
		return a.store.RenameNode(ctx, ref, name)
	}
	return a.call(ctx, adminPathRename, adminRequest{Node: ref, Name: name})
}

func (a *Admin) call(ctx context.Context, path string, req adminRequest) (NodeRecord, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return NodeRecord{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://coordinator"+path, bytes.NewReader(body))
	if err != nil {
		return NodeRecord{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(hreq)
	if err != nil {
		return NodeRecord{}, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return NodeRecord{}, fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e control.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return NodeRecord{}, errors.New(e.Error)
	}
	var rec NodeRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return NodeRecord{}, fmt.Errorf("admin socket: decode answer: %w", err)
	}
	return rec, nil
}

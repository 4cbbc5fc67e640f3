// Package admin is the coordinator's admin socket: the protocol that the
// running server's handlers (package coordinator) and the admin commands
// share, binding the socket, and the client that dials it.
package admin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Socket is the unix socket, in the state directory, through which admin
// commands change nodes while the server runs. A removal must reach every
// connected agent within a second, and only the server holds their
// streams: writing the store behind its back would leave the live mesh
// stale. The socket is mode 0600 in a 0700 directory, so only the owner of
// the state (who can edit the store anyway) can use it.
const Socket = "admin.sock"

// Paths of the admin API. The node paths take a JSON Request and answer
// the node's record or an error body (control.Error); policy set and check
// take the file as the request body.
const (
	PathRemove = "/v1/nodes/remove"
	PathExpire = "/v1/nodes/expire"
	PathRename = "/v1/nodes/rename"

	PathPolicy      = "/v1/policy"
	PathPolicySet   = "/v1/policy/set"
	PathPolicyCheck = "/v1/policy/check"
	PathPolicyClear = "/v1/policy/clear"

	PathUsage = "/v1/usage"
)

// Request names the node a node path changes, and its new name for a
// rename.
type Request struct {
	Node string `json:"node"`
	Name string `json:"name,omitempty"`
}

// Listen binds the admin socket in dir, replacing one a crashed server left
// (safe only for a caller that holds the state dir's lock, so that no other
// server uses it).
func Listen(dir string) (net.Listener, error) {
	path := filepath.Join(dir, Socket)
	if len(path) >= 108 { // sun_path in struct sockaddr_un
		return nil, fmt.Errorf("admin socket: path %s is too long for a unix socket (use a shorter --state)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

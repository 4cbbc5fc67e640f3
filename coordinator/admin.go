package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

// AdminSocket is the unix socket, in the state directory, through which
// admin commands change nodes while the server runs. A removal must reach
// every connected agent within a second, and only the server holds their
// streams: writing the store behind its back would leave the live mesh
// stale. The socket is mode 0600 in a 0700 directory, so only the owner of
// the state (who can edit the store anyway) can use it.
const AdminSocket = "admin.sock"

// Admin API paths; each takes a JSON adminRequest and answers a NodeRecord
// or an error body.
const (
	adminPathRemove = "/v1/nodes/remove"
	adminPathExpire = "/v1/nodes/expire"
	adminPathRename = "/v1/nodes/rename"
)

type adminRequest struct {
	Node string `json:"node"`
	Name string `json:"name,omitempty"`
}

// listenAdmin binds the admin socket, replacing one a crashed server left
// (safe: we hold the state dir's lock, so no other server uses it).
func listenAdmin(dir string) (net.Listener, error) {
	path := filepath.Join(dir, AdminSocket)
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

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+adminPathRemove, s.adminOp(func(r *http.Request, req adminRequest) (NodeRecord, error) {
		return s.RemoveNode(r.Context(), req.Node)
	}))
	mux.HandleFunc("POST "+adminPathExpire, s.adminOp(func(r *http.Request, req adminRequest) (NodeRecord, error) {
		return s.ExpireNode(r.Context(), req.Node)
	}))
	mux.HandleFunc("POST "+adminPathRename, s.adminOp(func(r *http.Request, req adminRequest) (NodeRecord, error) {
		return s.RenameNode(r.Context(), req.Node, req.Name)
	}))
	s.adminPolicyRoutes(mux)
	s.adminUsageRoute(mux)
	return mux
}

func (s *Server) adminOp(op func(*http.Request, adminRequest) (NodeRecord, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req adminRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil || req.Node == "" {
			writeError(w, http.StatusBadRequest, "want a JSON object with \"node\"")
			return
		}
		rec, err := op(r, req)
		if err != nil {
			writeError(w, adminErrorStatus(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, rec)
	}
}

func adminErrorStatus(err error) int {
	switch {
	case errors.Is(err, ErrNodeNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNameTaken):
		return http.StatusConflict
	case errors.Is(err, errBadName):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// serveAdmin serves the admin socket until it is closed.
func (s *Server) serveAdmin() error {
	if err := s.adminSrv.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serve admin socket: %w", err)
	}
	return nil
}

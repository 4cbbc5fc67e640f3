package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/meshvpn/meshvpn/coordinator/admin"
)

// The admin socket's handlers: package admin has the protocol and the
// socket, these the operations of a running server behind it.

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+admin.PathRemove, s.adminOp(func(r *http.Request, req admin.Request) (NodeRecord, error) {
		return s.RemoveNode(r.Context(), req.Node)
	}))
	mux.HandleFunc("POST "+admin.PathExpire, s.adminOp(func(r *http.Request, req admin.Request) (NodeRecord, error) {
		return s.ExpireNode(r.Context(), req.Node)
	}))
	mux.HandleFunc("POST "+admin.PathRename, s.adminOp(func(r *http.Request, req admin.Request) (NodeRecord, error) {
		return s.RenameNode(r.Context(), req.Node, req.Name)
	}))
	s.adminPolicyRoutes(mux)
	s.adminUsageRoute(mux)
	return mux
}

func (s *Server) adminOp(op func(*http.Request, admin.Request) (NodeRecord, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req admin.Request
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

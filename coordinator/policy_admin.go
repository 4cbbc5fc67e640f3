package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/meshvpn/meshvpn/coordinator/admin"
	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/policy"
)

func (s *Server) adminPolicyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+admin.PathPolicy, func(w http.ResponseWriter, r *http.Request) {
		src, err := s.PolicySource(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		if src == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Write(src)
	})
	body := func(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
		src, err := io.ReadAll(http.MaxBytesReader(w, r.Body, policy.MaxSize))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("policy larger than %d bytes", policy.MaxSize))
			return nil, false
		}
		return src, true
	}
	answer := func(w http.ResponseWriter, err error) {
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, struct{}{})
		case errors.Is(err, errBadPolicy):
			writeError(w, http.StatusBadRequest, err.Error())
		default:
			writeError(w, http.StatusInternalServerError, err.Error())
		}
	}
	mux.HandleFunc("POST "+admin.PathPolicySet, func(w http.ResponseWriter, r *http.Request) {
		if src, ok := body(w, r); ok {
			answer(w, s.SetPolicy(r.Context(), src))
		}
	})
	mux.HandleFunc("POST "+admin.PathPolicyClear, func(w http.ResponseWriter, r *http.Request) {
		answer(w, s.ClearPolicy(r.Context()))
	})
	mux.HandleFunc("POST "+admin.PathPolicyCheck, func(w http.ResponseWriter, r *http.Request) {
		if src, ok := body(w, r); ok {
			answer(w, s.CheckPolicy(src))
		}
	})
}

func (a *Admin) storeNodes(ctx context.Context) ([]policy.Node, error) {
	nodes, err := a.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]policy.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, hub.PolicyNode(n))
	}
	return out, nil
}

// CheckPolicy checks a policy file (syntax, selectors, tests).
func (a *Admin) CheckPolicy(ctx context.Context, src []byte) error {
	if a.store == nil {
		_, err := a.raw(ctx, http.MethodPost, admin.PathPolicyCheck, src)
		return err
	}
	nodes, err := a.storeNodes(ctx)
	if err != nil {
		return err
	}
	_, err = compilePolicy(src, nodes)
	return err
}

// SetPolicy checks and stores a policy file; a running server applies it
// at once.
func (a *Admin) SetPolicy(ctx context.Context, src []byte) error {
	if a.store == nil {
		_, err := a.raw(ctx, http.MethodPost, admin.PathPolicySet, src)
		return err
	}
	nodes, err := a.storeNodes(ctx)
	if err != nil {
		return err
	}
	if _, err := compilePolicy(src, nodes); err != nil {
		return err
	}
	return a.store.SetPolicy(ctx, src)
}

// ClearPolicy removes the policy.
func (a *Admin) ClearPolicy(ctx context.Context) error {
	if a.store != nil {
		return a.store.ClearPolicy(ctx)
	}
	_, err := a.raw(ctx, http.MethodPost, admin.PathPolicyClear, nil)
	return err
}

// Policy returns the stored policy, nil if none is set.
func (a *Admin) Policy(ctx context.Context) ([]byte, error) {
	if a.store != nil {
		return a.store.Policy(ctx)
	}
	b, err := a.raw(ctx, http.MethodGet, admin.PathPolicy, nil)
	if len(b) == 0 {
		b = nil
	}
	return b, err
}

func (a *Admin) raw(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return a.sock.Raw(ctx, method, path, body, policy.MaxSize+1)
}

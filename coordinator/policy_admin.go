package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/policy"
)

// Admin socket paths of the policy commands. set and check take the file
// as the request body.
const (
	adminPathPolicy      = "/v1/policy"
	adminPathPolicySet   = "/v1/policy/set"
	adminPathPolicyCheck = "/v1/policy/check"
	adminPathPolicyClear = "/v1/policy/clear"
)

func (s *Server) adminPolicyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+adminPathPolicy, func(w http.ResponseWriter, r *http.Request) {
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
	mux.HandleFunc("POST "+adminPathPolicySet, func(w http.ResponseWriter, r *http.Request) {
		if src, ok := body(w, r); ok {
			answer(w, s.SetPolicy(r.Context(), src))
		}
	})
	mux.HandleFunc("POST "+adminPathPolicyClear, func(w http.ResponseWriter, r *http.Request) {
		answer(w, s.ClearPolicy(r.Context()))
	})
	mux.HandleFunc("POST "+adminPathPolicyCheck, func(w http.ResponseWriter, r *http.Request) {
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
		out = append(out, toPolicyNode(n))
	}
	return out, nil
}

// CheckPolicy checks a policy file (syntax, selectors, tests).
func (a *Admin) CheckPolicy(ctx context.Context, src []byte) error {
	if a.store == nil {
		_, err := a.raw(ctx, http.MethodPost, adminPathPolicyCheck, src)
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
		_, err := a.raw(ctx, http.MethodPost, adminPathPolicySet, src)
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
	_, err := a.raw(ctx, http.MethodPost, adminPathPolicyClear, nil)
	return err
}

// Policy returns the stored policy, nil if none is set.
func (a *Admin) Policy(ctx context.Context) ([]byte, error) {
	if a.store != nil {
		return a.store.Policy(ctx)
	}
	b, err := a.raw(ctx, http.MethodGet, adminPathPolicy, nil)
	if len(b) == 0 {
		b = nil
	}
	return b, err
}

func (a *Admin) raw(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://coordinator"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, policy.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e control.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return nil, errors.New(e.Error)
	}
	return data, nil
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshvpn/meshvpn/policy"
)

// errBadPolicy marks a policy refused by its checks (as opposed to a store
// failure).
var errBadPolicy = errors.New("policy refused")

// compilePolicy checks a policy file the way "policy set" does: syntax,
// selectors, and every tests entry against the known nodes.
func compilePolicy(src []byte, nodes []policy.Node) (*policy.Compiled, error) {
	pol, err := policy.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPolicy, err)
	}
	c := policy.Compile(pol)
	if err := c.RunTests(nodes); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPolicy, err)
	}
	return c, nil
}

// loadPolicy installs the stored policy when the hub starts. A stored
// policy passed its checks when it was set; its tests are not run again
// here, since nodes may have changed since and a server must still start.
func (h *hub) loadPolicy(ctx context.Context) error {
	src, err := h.store.Policy(ctx)
	if err != nil || src == nil {
		return err
	}
	pol, err := policy.Parse(src)
	if err != nil {
		return fmt.Errorf("stored policy: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setPolicyLocked(policy.Compile(pol), src)
	return nil
}

func (h *hub) policyNodes() []policy.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]policy.Node, 0, len(h.ids))
	for _, id := range h.ids {
		out = append(out, toPolicyNode(h.nodes[id]))
	}
	return out
}

// CheckPolicy checks a policy file without storing it.
func (s *Server) CheckPolicy(src []byte) error {
	_, err := compilePolicy(src, s.hub.policyNodes())
	return err
}

// SetPolicy checks, stores and applies a policy file; every connected
// agent gets its new view in one delta. A refused file changes nothing.
func (s *Server) SetPolicy(ctx context.Context, src []byte) error {
	start := time.Now()
	c, err := compilePolicy(src, s.hub.policyNodes())
	if err != nil {
		return err
	}
	if err := s.store.SetPolicy(ctx, src); err != nil {
		return err
	}
	s.hub.mu.Lock()
	s.hub.setPolicyLocked(c, src)
	s.hub.mu.Unlock()
	s.peers.touch()
	s.log.Info("policy set", "rules", len(c.Policy().ACLs), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// ClearPolicy removes the policy; every agent is told at once.
func (s *Server) ClearPolicy(ctx context.Context) error {
	if err := s.store.ClearPolicy(ctx); err != nil {
		return err
	}
	s.hub.mu.Lock()
	s.hub.setPolicyLocked(nil, nil)
	s.hub.mu.Unlock()
	s.peers.touch()
	s.log.Info("policy cleared")
	return nil
}

// PolicySource returns the stored policy, or nil if none is set.
func (s *Server) PolicySource(ctx context.Context) ([]byte, error) {
	return s.store.Policy(ctx)
}

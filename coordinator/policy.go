package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshvpn/meshvpn/coordinator/hub"
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

// policyNodes are the members as the policy's tests see them.
func (s *Server) policyNodes() []policy.Node {
	nodes := s.hub.Nodes()
	out := make([]policy.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, hub.PolicyNode(n))
	}
	return out
}

// CheckPolicy checks a policy file without storing it.
func (s *Server) CheckPolicy(src []byte) error {
	_, err := compilePolicy(src, s.policyNodes())
	return err
}

// SetPolicy checks, stores and applies a policy file; every connected
// agent gets its new view in one delta. A refused file changes nothing.
func (s *Server) SetPolicy(ctx context.Context, src []byte) error {
	start := time.Now()
	c, err := compilePolicy(src, s.policyNodes())
	if err != nil {
		return err
	}
	if err := s.store.SetPolicy(ctx, src); err != nil {
		return err
	}
	s.hub.SetPolicy(c, src)
	s.peers.touch()
	s.log.Info("policy set", "rules", len(c.Policy().ACLs), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// ClearPolicy removes the policy; every agent is told at once.
func (s *Server) ClearPolicy(ctx context.Context) error {
	if err := s.store.ClearPolicy(ctx); err != nil {
		return err
	}
	s.hub.SetPolicy(nil, nil)
	s.peers.touch()
	s.log.Info("policy cleared")
	return nil
}

// PolicySource returns the stored policy, or nil if none is set.
func (s *Server) PolicySource(ctx context.Context) ([]byte, error) {
	return s.store.Policy(ctx)
}

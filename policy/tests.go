package policy

import (
	"errors"
	"fmt"
	"strings"
)

// RunTests evaluates the policy's "tests" against the known nodes. A test
// selector that names a known node stands for that node (with its tags); a
// tag or an address that names none stands for a node with just that tag or
// address, so tests can be written before the nodes join.
func (c *Compiled) RunTests(nodes []Node) error {
	byName := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	var errs []error
	for _, t := range c.pol.Tests {
		src := c.pol.testNode(t.Src, byName, nodes)
		check := func(list []string, want bool) {
			for _, d := range list {
				sel, port, err := c.pol.parseTestDest(d)
				if err != nil {
					errs = append(errs, &Error{t.Pos, err.Error()})
					continue
				}
				dst := c.pol.testNode(sel, byName, nodes)
				if got := c.Allows(src, dst, t.Proto, port); got != want {
					verb := "accept"
					if !want {
						verb = "deny"
					}
					errs = append(errs, &Error{t.Pos, fmt.Sprintf("test failed: %s → %s should %s, but the policy does not", t.Src, d, verb)})
				}
			}
		}
		check(t.Accept, true)
		check(t.Deny, false)
		if len(errs) >= 20 {
			break
		}
	}
	return errors.Join(errs...)
}

func (pol *Policy) testNode(sel string, byName map[string]Node, nodes []Node) Node {
	if _, alias := pol.Hosts[sel]; !alias {
		if n, ok := byName[sel]; ok {
			return n
		}
	}
	if strings.HasPrefix(sel, "tag:") {
		return Node{Tags: []string{CanonTag(sel[len("tag:"):])}}
	}
	atoms := pol.atoms(sel)
	if len(atoms) == 1 {
		if pfx, err := parseOverlayPrefix(atoms[0]); err == nil {
			for _, n := range nodes {
				if pfx.Contains(n.IP) {
					return n
				}
			}
			return Node{IP: pfx.Addr()}
		}
	}
	return Node{Name: sel}
}

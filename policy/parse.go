// Package policy parses the mesh's access policy (a subset of Tailscale's
// policy file format, in HuJSON) and compiles it into what each node needs:
// which peers it may talk to, and the rules its packet filter enforces.
//
// It depends on neither the coordinator nor the agent: the coordinator
// compiles, the agent matches the compiled rules against its netmap.
package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// MaxSize bounds a policy file: it is read whole and every rule is sent to
// the nodes it names.
const MaxSize = 1 << 20

// Policy is a parsed, checked policy file.
type Policy struct {
	// Groups maps "group:x" to its members: node names and tags.
	Groups map[string][]string
	// Hosts maps an alias to an overlay address or prefix.
	Hosts map[string]netip.Prefix
	ACLs  []ACL
	Tests []Test
}

// ACL is one "accept" rule: packets from any of Src to any of Dst.
type ACL struct {
	Src []string
	Dst []Dest
	// Proto is the IP protocol number; 0 means any.
	Proto uint8
	Pos   Pos
}

// Dest is one dst entry: a selector and the ports on it.
type Dest struct {
	Sel   string
	Ports []PortRange
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Test is a "tests" entry: what Src must and must not reach.
type Test struct {
	Src    string
	Proto  uint8
	Accept []string
	Deny   []string
	Pos    Pos
}

// Pos is a place in the policy file, 1-based.
type Pos struct{ Line, Col int }

func (p Pos) String() string { return fmt.Sprintf("line %d, column %d", p.Line, p.Col) }

// Error is a problem at a place in the file.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Protocol numbers a policy may name.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// parser walks the HuJSON syntax tree, so every error can name its place.
type parser struct {
	src []byte
}

func (p *parser) pos(v *hujson.Value) Pos {
	n := min(max(v.StartOffset, 0), len(p.src))
	line := 1 + strings.Count(string(p.src[:n]), "\n")
	col := n - strings.LastIndexByte(string(p.src[:n]), '\n')
	return Pos{line, col}
}

func (p *parser) errf(v *hujson.Value, format string, args ...any) error {
	return &Error{Pos: p.pos(v), Msg: fmt.Sprintf(format, args...)}
}

// Parse parses and checks a policy file.
func Parse(src []byte) (*Policy, error) {
	if len(src) > MaxSize {
		return nil, fmt.Errorf("policy is %d bytes: at most %d", len(src), MaxSize)
	}
	root, err := hujson.Parse(src)
	if err != nil {
		// hujson may quote the offending text: keep the message short.
		msg := strings.TrimPrefix(err.Error(), "hujson: ")
		if len(msg) > 160 {
			msg = msg[:160] + "…"
		}
		return nil, fmt.Errorf("policy syntax: %s", msg)
	}
	p := &parser{src: src}
	pol := &Policy{Groups: map[string][]string{}, Hosts: map[string]netip.Prefix{}}
	obj, err := p.object(&root, "the policy")
	if err != nil {
		return nil, err
	}
	// Sections are read in a fixed order so selectors can be checked
	// against groups and hosts wherever they appear in the file.
	sections := map[string]*hujson.Value{}
	for i := range obj.Members {
		m := &obj.Members[i]
		name := m.Name.Value.(hujson.Literal).String()
		switch name {
		case "groups", "hosts", "acls", "tests":
		default:
			return nil, p.errf(&m.Name, "unknown section %q (known: groups, hosts, acls, tests)", clip(name))
		}
		sections[name] = &m.Value
	}
	steps := []struct {
		name string
		fn   func(*hujson.Value, *Policy) error
	}{{"groups", p.groups}, {"hosts", p.hosts}, {"acls", p.acls}, {"tests", p.tests}}
	for _, s := range steps {
		if v := sections[s.name]; v != nil {
			if err := s.fn(v, pol); err != nil {
				return nil, err
			}
		}
	}
	return pol, nil
}

// object returns v as an object whose keys are unique.
func (p *parser) object(v *hujson.Value, what string) (*hujson.Object, error) {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		return nil, p.errf(v, "%s must be an object", what)
	}
	seen := map[string]bool{}
	for i := range obj.Members {
		k := obj.Members[i].Name.Value.(hujson.Literal).String()
		if seen[k] {
			return nil, p.errf(&obj.Members[i].Name, "duplicate key %q", clip(k))
		}
		seen[k] = true
	}
	return obj, nil
}

func (p *parser) str(v *hujson.Value, what string) (string, error) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		return "", p.errf(v, "%s must be a string", what)
	}
	return lit.String(), nil
}

func (p *parser) strings(v *hujson.Value, what string) ([]string, []*hujson.Value, error) {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		return nil, nil, p.errf(v, "%s must be a list of strings", what)
	}
	out := make([]string, 0, len(arr.Elements))
	vals := make([]*hujson.Value, 0, len(arr.Elements))
	for i := range arr.Elements {
		s, err := p.str(&arr.Elements[i], what+" entry")
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
		vals = append(vals, &arr.Elements[i])
	}
	return out, vals, nil
}

func (p *parser) groups(v *hujson.Value, pol *Policy) error {
	obj, err := p.object(v, `"groups"`)
	if err != nil {
		return err
	}
	for i := range obj.Members {
		m := &obj.Members[i]
		name := m.Name.Value.(hujson.Literal).String()
		if !strings.HasPrefix(name, "group:") || checkLabel(name[len("group:"):]) != nil {
			return p.errf(&m.Name, "group name %q: want group:NAME with lowercase letters, digits, - _ .", clip(name))
		}
		members, vals, err := p.strings(&m.Value, "group "+name)
		if err != nil {
			return err
		}
		for j, s := range members {
			if err := checkMember(s); err != nil {
				return p.errf(vals[j], "group %s: %v", name, err)
			}
		}
		pol.Groups[name] = members
	}
	return nil
}

func (p *parser) hosts(v *hujson.Value, pol *Policy) error {
	obj, err := p.object(v, `"hosts"`)
	if err != nil {
		return err
	}
	for i := range obj.Members {
		m := &obj.Members[i]
		name := m.Name.Value.(hujson.Literal).String()
		if err := checkLabel(name); err != nil {
			return p.errf(&m.Name, "host alias: %v", err)
		}
		s, err := p.str(&m.Value, "host "+name)
		if err != nil {
			return err
		}
		pfx, err := parseOverlayPrefix(s)
		if err != nil {
			return p.errf(&m.Value, "host %s: %v", name, err)
		}
		pol.Hosts[name] = pfx
	}
	return nil
}

func (p *parser) acls(v *hujson.Value, pol *Policy) error {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		return p.errf(v, `"acls" must be a list`)
	}
	for i := range arr.Elements {
		e := &arr.Elements[i]
		obj, err := p.object(e, "an acls entry")
		if err != nil {
			return err
		}
		acl := ACL{Pos: p.pos(e)}
		var haveAction, haveSrc, haveDst bool
		for j := range obj.Members {
			m := &obj.Members[j]
			key := m.Name.Value.(hujson.Literal).String()
			switch key {
			case "action":
				s, err := p.str(&m.Value, `"action"`)
				if err != nil {
					return err
				}
				if s != "accept" {
					return p.errf(&m.Value, `action %q: only "accept" (anything not accepted is denied)`, clip(s))
				}
				haveAction = true
			case "src":
				srcs, vals, err := p.strings(&m.Value, `"src"`)
				if err != nil {
					return err
				}
				for k, s := range srcs {
					if err := pol.checkSelector(s); err != nil {
						return p.errf(vals[k], "src: %v", err)
					}
				}
				acl.Src, haveSrc = srcs, true
			case "dst":
				dsts, vals, err := p.strings(&m.Value, `"dst"`)
				if err != nil {
					return err
				}
				for k, s := range dsts {
					d, err := pol.parseDest(s)
					if err != nil {
						return p.errf(vals[k], "dst: %v", err)
					}
					acl.Dst = append(acl.Dst, d)
				}
				haveDst = true
			case "proto":
				if acl.Proto, err = p.proto(&m.Value); err != nil {
					return err
				}
			default:
				return p.errf(&m.Name, "unknown key %q in an acls entry (known: action, src, dst, proto)", clip(key))
			}
		}
		if !haveAction || !haveSrc || !haveDst {
			return p.errf(e, `an acls entry needs "action", "src" and "dst"`)
		}
		pol.ACLs = append(pol.ACLs, acl)
	}
	return nil
}

func (p *parser) proto(v *hujson.Value) (uint8, error) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok {
		return 0, p.errf(v, `"proto" must be "tcp", "udp", "icmp" or a number`)
	}
	var s string
	switch lit.Kind() {
	case '"':
		s = lit.String()
	case '0':
		s = string(lit)
	default:
		return 0, p.errf(v, `"proto" must be "tcp", "udp", "icmp" or a number`)
	}
	n, err := ParseProto(s)
	if err != nil {
		return 0, p.errf(v, "%v", err)
	}
	return n, nil
}

// ParseProto reads a protocol name or number (1-255).
func ParseProto(s string) (uint8, error) {
	switch s {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("proto %q: want tcp, udp, icmp or a number from 1 to 255", clip(s))
	}
	return uint8(n), nil
}

func (p *parser) tests(v *hujson.Value, pol *Policy) error {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		return p.errf(v, `"tests" must be a list`)
	}
	for i := range arr.Elements {
		e := &arr.Elements[i]
		obj, err := p.object(e, "a tests entry")
		if err != nil {
			return err
		}
		t := Test{Pos: p.pos(e), Proto: ProtoTCP}
		for j := range obj.Members {
			m := &obj.Members[j]
			key := m.Name.Value.(hujson.Literal).String()
			switch key {
			case "src":
				if t.Src, err = p.str(&m.Value, `"src"`); err != nil {
					return err
				}
				if err := pol.checkSelector(t.Src); err != nil || t.Src == "*" || strings.HasPrefix(t.Src, "group:") {
					return p.errf(&m.Value, "test src %q: want one node name, tag, host alias or address", clip(t.Src))
				}
			case "proto":
				if t.Proto, err = p.proto(&m.Value); err != nil {
					return err
				}
			case "accept", "deny":
				list, vals, err := p.strings(&m.Value, `"`+key+`"`)
				if err != nil {
					return err
				}
				for k, s := range list {
					if _, _, err := pol.parseTestDest(s); err != nil {
						return p.errf(vals[k], "%s: %v", key, err)
					}
				}
				if key == "accept" {
					t.Accept = list
				} else {
					t.Deny = list
				}
			default:
				return p.errf(&m.Name, "unknown key %q in a tests entry (known: src, proto, accept, deny)", clip(key))
			}
		}
		if t.Src == "" {
			return p.errf(e, `a tests entry needs "src"`)
		}
		pol.Tests = append(pol.Tests, t)
	}
	return nil
}

// clip keeps error messages short whatever the file holds.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// overlay is the range node addresses come from (control.OverlayPrefix);
// kept here so the package stays free of the wire types.
var overlay = netip.MustParsePrefix("100.64.0.0/10")

// maxPortRanges bounds one dst entry's port list.
const maxPortRanges = 64

// checkLabel checks a name used as a node name, group or alias suffix.
func checkLabel(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q: want 1 to 63 characters", clip(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && strings.IndexByte("-_.", c) >= 0) {
			return fmt.Errorf("%q: use lowercase letters, digits and - _ . (starting with a letter or digit)", clip(s))
		}
	}
	return nil
}

// CanonTag is the tag a node's auth key tag or a "tag:X" selector names:
// "--tag X" and "--tag tag:X" are the same tag.
func CanonTag(t string) string { return strings.TrimPrefix(t, "tag:") }

func checkTagSel(s string) error {
	t := CanonTag(strings.TrimPrefix(s, "tag:"))
	if err := checkLabel(t); err != nil {
		return fmt.Errorf("tag %w", err)
	}
	return nil
}

// checkMember checks a group member: a node name or a tag.
func checkMember(s string) error {
	if strings.HasPrefix(s, "tag:") {
		return checkTagSel(s)
	}
	if err := checkLabel(s); err != nil {
		return fmt.Errorf("member %w (want a node name or tag:NAME)", err)
	}
	return nil
}

func parseOverlayPrefix(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		pfx, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(s)
		if err == nil {
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or prefix", clip(s))
	}
	pfx = pfx.Masked()
	if !pfx.Addr().Is4() || !overlay.Overlaps(pfx) {
		return netip.Prefix{}, fmt.Errorf("%s is outside the overlay range %s", pfx, overlay)
	}
	return pfx, nil
}

// checkSelector checks a src selector: *, a node name, tag:X, group:X, a
// hosts alias, or an overlay address or prefix.
func (pol *Policy) checkSelector(s string) error {
	switch {
	case s == "*":
		return nil
	case strings.HasPrefix(s, "tag:"):
		return checkTagSel(s)
	case strings.HasPrefix(s, "group:"):
		if _, ok := pol.Groups[s]; !ok {
			return fmt.Errorf("%q is not defined in \"groups\"", clip(s))
		}
		return nil
	case strings.ContainsAny(s, "/:") || startsWithDigitDot(s):
		_, err := parseOverlayPrefix(s)
		return err
	}
	if _, ok := pol.Hosts[s]; ok {
		return nil
	}
	if err := checkLabel(s); err != nil {
		return fmt.Errorf("selector %w", err)
	}
	return nil
}

// startsWithDigitDot tells an address ("100.64.0.9") from a node name
// ("web1"): names never contain a dot before a digit-only label.
func startsWithDigitDot(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// parseDest reads "SELECTOR:PORTS".
func (pol *Policy) parseDest(s string) (Dest, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Dest{}, fmt.Errorf("%q: want SELECTOR:PORTS, e.g. server:22 or *:*", clip(s))
	}
	sel, ports := s[:i], s[i+1:]
	if err := pol.checkSelector(sel); err != nil {
		return Dest{}, err
	}
	pr, err := ParsePorts(ports)
	if err != nil {
		return Dest{}, fmt.Errorf("%q: %w", clip(s), err)
	}
	return Dest{Sel: sel, Ports: pr}, nil
}

// parseTestDest reads a test's "SELECTOR:PORT".
func (pol *Policy) parseTestDest(s string) (string, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%q: want HOST:PORT", clip(s))
	}
	sel := s[:i]
	port, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want HOST:PORT with one port", clip(s))
	}
	if err := pol.checkSelector(sel); err != nil || sel == "*" || strings.HasPrefix(sel, "group:") {
		return "", 0, fmt.Errorf("%q: want one node name, tag, host alias or address", clip(s))
	}
	return sel, uint16(port), nil
}

// ParsePorts reads "*", a port, a range "1000-2000", or a comma list.
func ParsePorts(s string) ([]PortRange, error) {
	if s == "*" {
		return []PortRange{{0, 65535}}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxPortRanges {
		return nil, fmt.Errorf("more than %d port ranges", maxPortRanges)
	}
	out := make([]PortRange, 0, len(parts))
	for _, p := range parts {
		lo, hi, isRange := strings.Cut(p, "-")
		first, err1 := strconv.ParseUint(lo, 10, 16)
		last, err2 := first, error(nil)
		if isRange {
			last, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err := errors.Join(err1, err2); err != nil || last < first {
			return nil, fmt.Errorf("ports %q: want *, a port, a range 1000-2000, or a list 22,80", clip(p))
		}
		out = append(out, PortRange{uint16(first), uint16(last)})
	}
	return out, nil
}

// MatchAtom tells whether a plain selector from a Rule ("*", a node name,
// "tag:x", an address prefix) names the node with this name, address and
// tags.
func MatchAtom(atom, name string, ip netip.Addr, tags []string) bool {
	switch {
	case atom == "*":
		return true
	case strings.HasPrefix(atom, "tag:"):
		want := atom[len("tag:"):]
		for _, t := range tags {
			if CanonTag(t) == want {
				return true
			}
		}
		return false
	case strings.ContainsRune(atom, '/'):
		pfx, err := netip.ParsePrefix(atom)
		return err == nil && ip.IsValid() && pfx.Contains(ip)
	}
	return atom == name
}

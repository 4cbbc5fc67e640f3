package policy

import (
	"math/bits"
	"net/netip"
	"strings"
	"sync"
	"unsafe"
)

// Node is what the policy needs to know about a node.
type Node struct {
	ID   uint64
	Name string
	IP   netip.Addr
	Tags []string
}

// Rule is one rule of a node's packet filter, as sent in its netmap.
// Peers holds plain selectors the agent matches against its peers: "*", a
// node name, "tag:x" (canonical), or an address prefix. Groups and hosts
// aliases are already expanded.
type Rule struct {
	Peers []string `json:"peers"`
	// Proto 0 means any protocol.
	Proto uint8       `json:"proto,omitempty"`
	Ports []PortRange `json:"ports,omitempty"`
}

// Filter is a node's packet filter: In says who may open connections to
// this node, Out whom this node may open connections to.
type Filter struct {
	In  []Rule `json:"in"`
	Out []Rule `json:"out"`
	// AllowAll lifts filtering: no policy is set.
	AllowAll bool `json:"allow_all,omitempty"`
}

// Compiled is a policy turned into lookup tables. Its cost is independent
// of the number of nodes: a node is placed by Profile, with a few map
// lookups for its name and tags, and two nodes' relation is a few word ANDs
// of their profiles. Nothing ever walks all pairs of nodes.
type Compiled struct {
	pol   *Policy
	rules []crule
	// ents flattens every (rule, dst) pair; profile dst bits index it.
	ents []entRef
	src  index // selector → rule numbers
	dst  index // selector → entry numbers

	mu       sync.Mutex
	profiles map[string]*Profile
	nextID   int
}

type crule struct {
	src   []string // atoms
	proto uint8
	dsts  []cdest
}

type cdest struct {
	atoms []string
	ports []PortRange
}

type entRef struct{ rule, dest int }

// index maps atoms to the numbers (rules or entries) they appear in.
type index struct {
	star  []int
	name  map[string][]int
	tag   map[string][]int
	pfx   []pfxRef
	words int
}

type pfxRef struct {
	pfx netip.Prefix
	n   int
}

func newIndex(size int) index {
	return index{name: map[string][]int{}, tag: map[string][]int{}, words: (size + 63) / 64}
}

func (ix *index) add(atom string, n int) {
	switch {
	case atom == "*":
		ix.star = append(ix.star, n)
	case strings.HasPrefix(atom, "tag:"):
		t := atom[len("tag:"):]
		ix.tag[t] = append(ix.tag[t], n)
	default:
		if pfx, err := netip.ParsePrefix(atom); err == nil {
			ix.pfx = append(ix.pfx, pfxRef{pfx, n})
			return
		}
		ix.name[atom] = append(ix.name[atom], n)
	}
}

// bits sets the numbers whose selectors match n.
func (ix *index) bits(n Node) []uint64 {
	b := make([]uint64, ix.words)
	set := func(list []int) {
		for _, i := range list {
			b[i/64] |= 1 << (i % 64)
		}
	}
	set(ix.star)
	set(ix.name[n.Name])
	for _, t := range n.Tags {
		set(ix.tag[CanonTag(t)])
	}
	if n.IP.IsValid() {
		for _, p := range ix.pfx {
			if p.pfx.Contains(n.IP) {
				b[p.n/64] |= 1 << (p.n % 64)
			}
		}
	}
	return b
}

// atoms expands a selector into plain selectors.
func (pol *Policy) atoms(sel string) []string {
	switch {
	case sel == "*":
		return []string{"*"}
	case strings.HasPrefix(sel, "tag:"):
		return []string{"tag:" + CanonTag(sel[len("tag:"):])}
	case strings.HasPrefix(sel, "group:"):
		var out []string
		for _, m := range pol.Groups[sel] {
			out = append(out, pol.atoms(m)...)
		}
		return out
	}
	if pfx, ok := pol.Hosts[sel]; ok {
		return []string{pfx.String()}
	}
	if pfx, err := parseOverlayPrefix(sel); err == nil {
		return []string{pfx.String()}
	}
	return []string{sel}
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Compile builds the lookup tables of a checked policy.
func Compile(pol *Policy) *Compiled {
	c := &Compiled{pol: pol, profiles: map[string]*Profile{}}
	for _, a := range pol.ACLs {
		r := crule{proto: a.Proto}
		for _, s := range a.Src {
			r.src = append(r.src, pol.atoms(s)...)
		}
		r.src = dedupe(r.src)
		for _, d := range a.Dst {
			r.dsts = append(r.dsts, cdest{atoms: dedupe(pol.atoms(d.Sel)), ports: d.Ports})
		}
		c.rules = append(c.rules, r)
	}
	c.src = newIndex(len(c.rules))
	for i, r := range c.rules {
		for _, a := range r.src {
			c.src.add(a, i)
		}
		for j := range r.dsts {
			c.ents = append(c.ents, entRef{i, j})
		}
	}
	c.dst = newIndex(len(c.ents))
	for e, ref := range c.ents {
		for _, a := range c.rules[ref.rule].dsts[ref.dest].atoms {
			c.dst.add(a, e)
		}
	}
	return c
}

// Policy returns the policy c was compiled from.
func (c *Compiled) Policy() *Policy { return c.pol }

// Profile is the place of a node in a compiled policy: the rules it is a
// source of and the dst entries it is a destination of. Nodes with equal
// profiles are treated alike, so profiles are shared.
type Profile struct {
	// ID is dense and unique within one Compiled.
	ID      int
	src     []uint64 // rules
	dst     []uint64 // entries
	dstRule []uint64 // rules with an entry in dst

	once   sync.Once
	filter Filter
}

// Profile places n in the policy.
func (c *Compiled) Profile(n Node) *Profile {
	src, dst := c.src.bits(n), c.dst.bits(n)
	key := wordsKey(src) + "|" + wordsKey(dst)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.profiles[key]; ok {
		return p
	}
	p := &Profile{ID: c.nextID, src: src, dst: dst, dstRule: make([]uint64, len(src))}
	c.nextID++
	forEach(dst, func(e int) {
		r := c.ents[e].rule
		p.dstRule[r/64] |= 1 << (r % 64)
	})
	c.profiles[key] = p
	return p
}

// Profiles is how many distinct profiles have been made so far.
func (c *Compiled) Profiles() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.profiles)
}

// wordsKey is a bitset's bytes as a map key, without a copy per word:
// placing 10,000 nodes builds 10,000 keys.
func wordsKey(w []uint64) string {
	if len(w) == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*8))
}

func forEach(w []uint64, fn func(int)) {
	for i, x := range w {
		for x != 0 {
			b := bits.TrailingZeros64(x)
			fn(i*64 + b)
			x &^= 1 << b
		}
	}
}

func intersects(a, b []uint64) bool {
	for i := range a {
		if a[i]&b[i] != 0 {
			return true
		}
	}
	return false
}

// Peers tells whether two nodes may talk in at least one direction, and
// so must know each other.
func Peers(a, b *Profile) bool {
	return intersects(a.src, b.dstRule) || intersects(b.src, a.dstRule)
}

// Filter returns the packet filter of nodes with profile p.
func (c *Compiled) Filter(p *Profile) Filter {
	p.once.Do(func() {
		f := Filter{In: []Rule{}, Out: []Rule{}}
		forEach(p.dst, func(e int) {
			ref := c.ents[e]
			r := c.rules[ref.rule]
			f.In = append(f.In, Rule{Peers: r.src, Proto: r.proto, Ports: r.dsts[ref.dest].ports})
		})
		forEach(p.src, func(i int) {
			r := c.rules[i]
			for _, d := range r.dsts {
				f.Out = append(f.Out, Rule{Peers: d.atoms, Proto: r.proto, Ports: d.ports})
			}
		})
		f.In, f.Out = mergeRules(f.In), mergeRules(f.Out)
		p.filter = f
	})
	return p.filter
}

func portsKey(ports []PortRange) string {
	b := make([]byte, 0, 4*len(ports))
	for _, p := range ports {
		b = append(b, byte(p.First>>8), byte(p.First), byte(p.Last>>8), byte(p.Last))
	}
	return string(b)
}

// mergeRules joins rules with the same protocol and ports into one with the
// union of their peers: the same filter, a fraction of the bytes in every
// netmap (a node that is the source of 50 rules would otherwise carry 150
// out rules, mostly repeating the same groups).
func mergeRules(rules []Rule) []Rule {
	type key struct {
		proto uint8
		ports string
	}
	out := make([]Rule, 0, len(rules))
	at := map[key]int{}
	seen := map[key]map[string]bool{}
	for _, r := range rules {
		k := key{r.Proto, portsKey(r.Ports)}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			seen[k] = map[string]bool{}
			out = append(out, Rule{Proto: r.Proto, Ports: r.Ports})
		}
		for _, p := range r.Peers {
			if !seen[k][p] {
				seen[k][p] = true
				out[i].Peers = append(out[i].Peers, p)
			}
		}
	}
	return out
}

// Allows tells whether src may open a connection to dst on proto/port.
func (c *Compiled) Allows(src, dst Node, proto uint8, port uint16) bool {
	ps, pd := c.Profile(src), c.Profile(dst)
	allowed := false
	forEach(pd.dst, func(e int) {
		ref := c.ents[e]
		r := c.rules[ref.rule]
		if allowed || ps.src[ref.rule/64]&(1<<(ref.rule%64)) == 0 {
			return
		}
		if r.proto != 0 && r.proto != proto {
			return
		}
		allowed = PortsMatch(r.dsts[ref.dest].ports, proto, port)
	})
	return allowed
}

// PortsMatch tells whether port is in ranges; protocols without ports
// (ICMP, ...) match any port list.
func PortsMatch(ranges []PortRange, proto uint8, port uint16) bool {
	if proto != ProtoTCP && proto != ProtoUDP && proto != 132 { // 132: SCTP
		return true
	}
	for _, r := range ranges {
		if port >= r.First && port <= r.Last {
			return true
		}
	}
	return false
}

package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func mustCompile(t testing.TB, src string) *Compiled {
	t.Helper()
	pol, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return Compile(pol)
}

var (
	laptop = Node{ID: 1, Name: "laptop", IP: netip.MustParseAddr("100.64.0.1")}
	server = Node{ID: 2, Name: "server", IP: netip.MustParseAddr("100.64.0.2"), Tags: []string{"tag:server"}}
	ci     = Node{ID: 3, Name: "runner", IP: netip.MustParseAddr("100.64.0.3"), Tags: []string{"ci"}}
	nas    = Node{ID: 4, Name: "nas", IP: netip.MustParseAddr("100.64.0.9")}
	lonely = Node{ID: 5, Name: "lonely", IP: netip.MustParseAddr("100.64.0.5")}
)

func TestSelectors(t *testing.T) {
	c := mustCompile(t, example)
	cases := []struct {
		src, dst Node
		proto    uint8
		port     uint16
		want     bool
	}{
		{laptop, server, ProtoTCP, 22, true}, // group member (name) → tag:server (tag given as tag:server)
		{laptop, server, ProtoTCP, 80, true}, // port list
		{laptop, server, ProtoTCP, 443, false},
		{ci, server, ProtoUDP, 22, true},      // group member (tag given as plain "ci")
		{server, laptop, ProtoTCP, 22, false}, // one direction only
		{server, laptop, ProtoICMP, 0, true},  // proto rule to *
		{server, laptop, ProtoTCP, 0, false},
		{laptop, nas, ProtoTCP, 5432, true}, // hosts alias db = nas's IP
		{laptop, nas, ProtoTCP, 5433, true}, // nas:* as well
		{ci, nas, ProtoTCP, 5432, true},
		{server, nas, ProtoTCP, 5432, false},
		{laptop, lonely, ProtoTCP, 22, false},
		{laptop, Node{Name: "x", IP: netip.MustParseAddr("100.64.1.7")}, ProtoTCP, 1500, true}, // CIDR
		{laptop, Node{Name: "x", IP: netip.MustParseAddr("100.64.2.7")}, ProtoTCP, 1500, false},
	}
	for _, k := range cases {
		if got := c.Allows(k.src, k.dst, k.proto, k.port); got != k.want {
			t.Errorf("%s → %s proto %d port %d: got %v", k.src.Name, k.dst.Name, k.proto, k.port, got)
		}
	}
	if !Peers(c.Profile(laptop), c.Profile(server)) || !Peers(c.Profile(server), c.Profile(laptop)) {
		t.Error("laptop and server are not peers")
	}
	if Peers(c.Profile(lonely), c.Profile(laptop)) {
		t.Error("lonely and laptop are peers")
	}
}

func TestFilterOfProfile(t *testing.T) {
	c := mustCompile(t, `{"groups": {"group:dev": ["laptop", "tag:ci"]},
	  "acls": [{"action": "accept", "src": ["group:dev"], "dst": ["tag:server:22"]}]}`)
	f := c.Filter(c.Profile(server))
	if len(f.In) != 1 || len(f.Out) != 0 || fmt.Sprint(f.In[0].Peers) != "[laptop tag:ci]" || f.In[0].Ports[0] != (PortRange{22, 22}) {
		t.Fatalf("server filter %+v", f)
	}
	f = c.Filter(c.Profile(laptop))
	if len(f.In) != 0 || len(f.Out) != 1 || fmt.Sprint(f.Out[0].Peers) != "[tag:server]" {
		t.Fatalf("laptop filter %+v", f)
	}
	if Peers(c.Profile(lonely), c.Profile(server)) || Peers(c.Profile(laptop), c.Profile(ci)) {
		t.Fatal("peers that no rule joins")
	}
	if c.Profile(laptop) == c.Profile(server) || c.Profile(nas) != c.Profile(lonely) {
		t.Fatal("profiles not shared as expected")
	}
}

// benchPolicy writes a policy of 50 groups and 500 rules over nodes
// n0..n(N-1), tagged t0..t99.
func benchPolicy(nodes int) string {
	src := `{"groups": {`
	for g := 0; g < 50; g++ {
		src += fmt.Sprintf(`"group:g%d": ["tag:t%d", "tag:t%d", "n%d", "n%d"],`, g, g, g+50, g*7, g*13+1)
	}
	src += `}, "acls": [`
	for r := 0; r < 500; r++ {
		src += fmt.Sprintf(`{"action": "accept", "src": ["group:g%d", "n%d"], "dst": ["tag:t%d:22,80", "group:g%d:1000-2000", "n%d:*"]},`,
			r%50, (r*31)%nodes, r%100, (r+1)%50, (r*17)%nodes)
	}
	return src + `]}`
}

func benchNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{ID: uint64(i + 1), Name: fmt.Sprintf("n%d", i),
			IP: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), Tags: []string{fmt.Sprintf("t%d", i%100)}}
	}
	return nodes
}

// BenchmarkCompile10k: parse + compile + place 10,000 nodes + every
// node's filter. This is the per-policy-change cost on the coordinator.
func BenchmarkCompile10k(b *testing.B) {
	src := []byte(benchPolicy(10000))
	nodes := benchNodes(10000)
	for b.Loop() {
		pol, err := Parse(src)
		if err != nil {
			b.Fatal(err)
		}
		c := Compile(pol)
		for _, n := range nodes {
			c.Filter(c.Profile(n))
		}
	}
}

// BenchmarkPeers10k: the one-node cost of a join: its profile and its
// peer test against 10,000 others (what its trimmed netmap needs).
func BenchmarkPeers10k(b *testing.B) {
	c := mustCompile(b, benchPolicy(10000))
	nodes := benchNodes(10000)
	profs := make([]*Profile, len(nodes))
	for i, n := range nodes {
		profs[i] = c.Profile(n)
	}
	b.ReportMetric(float64(c.Profiles()), "profiles")
	i := 0
	for b.Loop() {
		p := c.Profile(nodes[i%len(nodes)])
		k := 0
		for _, q := range profs {
			if Peers(p, q) {
				k++
			}
		}
		i++
	}
}

// The compile of the benchmark policy must stay far below a second, the
// budget for a policy change to reach every agent.
func TestCompile10kFast(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	src := []byte(benchPolicy(10000))
	nodes := benchNodes(10000)
	start := time.Now()
	pol, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	c := Compile(pol)
	for _, n := range nodes {
		c.Filter(c.Profile(n))
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("compile of 10,000 nodes, 50 groups, 500 rules took %v", d)
	}
}

// Rules with the same protocol and ports reach a node as one rule.
func TestFilterMergesRules(t *testing.T) {
	c := mustCompile(t, `{"acls": [
	  {"action": "accept", "src": ["laptop"], "dst": ["server:22"]},
	  {"action": "accept", "src": ["tag:ci", "laptop"], "dst": ["server:22"]},
	  {"action": "accept", "src": ["nas"], "dst": ["server:80"]}]}`)
	f := c.Filter(c.Profile(server))
	if len(f.In) != 2 || fmt.Sprint(f.In[0].Peers) != "[laptop tag:ci]" || fmt.Sprint(f.In[1].Peers) != "[nas]" {
		t.Fatalf("merged in rules: %+v", f.In)
	}
	for _, k := range []struct {
		src  Node
		port uint16
		want bool
	}{{laptop, 22, true}, {ci, 22, true}, {nas, 22, false}, {nas, 80, true}, {laptop, 80, false}} {
		if got := c.Allows(k.src, server, ProtoTCP, k.port); got != k.want {
			t.Errorf("%s → server:%d: %v", k.src.Name, k.port, got)
		}
	}
}

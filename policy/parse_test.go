package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const example = `{
  // who is who
  "groups": {"group:dev": ["laptop", "tag:ci"]},
  "hosts":  {"db": "100.64.0.9"},
  "acls": [
    {"action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,80", "nas:*"]},
    {"action": "accept", "src": ["tag:server"], "proto": "icmp", "dst": ["*:*"]},
    /* db only from the laptop */
    {"action": "accept", "src": ["laptop"], "dst": ["db:5432", "100.64.1.0/24:1000-2000"]},
  ],
  "tests": [
    {"src": "laptop", "accept": ["server:22", "db:5432"], "deny": ["server:443"]},
  ],
}`

func TestParseExample(t *testing.T) {
	pol, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.ACLs) != 3 || pol.ACLs[1].Proto != ProtoICMP || len(pol.Tests) != 1 {
		t.Fatalf("parsed %+v", pol)
	}
	if got := pol.ACLs[0].Dst[0]; got.Sel != "tag:server" || len(got.Ports) != 2 || got.Ports[1] != (PortRange{80, 80}) {
		t.Fatalf("dst %+v", got)
	}
	if got := pol.ACLs[2].Dst[1].Ports[0]; got != (PortRange{1000, 2000}) {
		t.Fatalf("range %+v", got)
	}
	if pol.Hosts["db"] != netip.MustParsePrefix("100.64.0.9/32") {
		t.Fatalf("hosts %v", pol.Hosts)
	}
	nodes := []Node{
		{ID: 1, Name: "laptop", IP: netip.MustParseAddr("100.64.0.1")},
		{ID: 2, Name: "server", IP: netip.MustParseAddr("100.64.0.2"), Tags: []string{"server"}},
	}
	if err := Compile(pol).RunTests(nodes); err != nil {
		t.Fatal(err)
	}
}

// Every error names the place of the offending key or value.
func TestParseErrorsHavePositions(t *testing.T) {
	cases := []struct{ src, want string }{
		{`{"acl": []}`, `line 1, column 2: unknown section "acl"`},
		{"{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"users\": []}]}", `line 3, column 56: unknown key "users"`},
		{"{\"acls\": [{\"action\": \"deny\", \"src\": [], \"dst\": []}]}", `line 1, column 22: action "deny"`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"group:x\"], \"dst\": []}]}", `line 1, column 40: src: "group:x" is not defined`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"server\"]}]}", `line 1, column 54: dst: "server": want SELECTOR:PORTS`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"s:99999\"]}]}", `dst: "s:99999": ports "99999"`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"s:9-1\"]}]}", `ports "9-1"`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"10.0.0.1\"], \"dst\": [\"*:*\"]}]}", `outside the overlay range`},
		{"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"proto\": \"sctpx\"}]}", `proto "sctpx"`},
		{"{\"acls\": [{\"src\": [\"*\"], \"dst\": [\"*:*\"]}]}", `line 1, column 11: an acls entry needs "action"`},
		{"{\"groups\": {\"dev\": []}}", `line 1, column 13: group name "dev"`},
		{"{\"groups\": {\"group:a\": [\"Bad Name\"]}}", `line 1, column 25: group group:a`},
		{"{\"hosts\": {\"db\": \"1.2.3.4\"}}", `line 1, column 18: host db: 1.2.3.4/32 is outside`},
		{"{\"groups\": {}, \"groups\": {}}", `line 1, column 16: duplicate key "groups"`},
		{"{\"tests\": [{\"src\": \"laptop\", \"accept\": [\"server\"]}]}", `line 1, column 41: accept: "server": want HOST:PORT`},
		{"{\"tests\": [{\"src\": \"laptop\", \"allow\": []}]}", `line 1, column 30: unknown key "allow"`},
		{"{\n\"acls\": [,]}", "policy syntax: line 2, column 10"},
		{`[]`, "line 1, column 1: the policy must be an object"},
		{"{\"tests\": [{\"src\": \"laptop\", \"deny\": [\"server:22\"]}],\n \"acls\": [{\"action\": \"accept\", \"src\": [\"laptop\"], \"dst\": [\"server:22\"]}]}", "test failed: laptop → server:22 should deny"},
	}
	for _, c := range cases {
		pol, err := Parse([]byte(c.src))
		if err == nil {
			err = Compile(pol).RunTests(nil)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\n  got  %v\n  want %s", c.src, err, c.want)
		}
	}
}

func TestParsePorts(t *testing.T) {
	for s, want := range map[string][]PortRange{
		"*":           {{0, 65535}},
		"22":          {{22, 22}},
		"22,80,90-99": {{22, 22}, {80, 80}, {90, 99}},
	} {
		got, err := ParsePorts(s)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: %v %v", s, got, err)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: %v", s, got)
			}
		}
	}
	for _, bad := range []string{"", "a", "1-", "-1", "65536", "22,", "5-4"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}`))
	f.Add([]byte(`{"groups":{"group:a":["tag:x","b"]},"hosts":{"h":"100.64.0.0/24"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pol, err := Parse(b)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		c := Compile(pol)
		n := Node{Name: "a", IP: netip.MustParseAddr("100.64.0.1"), Tags: []string{"x"}}
		p := c.Profile(n)
		c.Filter(p)
		Peers(p, c.Profile(Node{Name: "b"}))
		_ = c.RunTests([]Node{n})
	})
}

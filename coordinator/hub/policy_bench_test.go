package hub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/policy"
)

// benchHubPolicy builds a hub of n connected nodes (fake streams) named
// sim-i with tags t0..t9, as the loadgen's -policy run does.
func benchHubPolicy(b testing.TB, n int) *Hub {
	h, err := New(b.Context(), Config{Store: emptyStore{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Shutdown)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range n {
		id := uint64(i + 1)
		nd := control.Node{ID: id, Name: fmt.Sprintf("sim-%d", i), IP: fmt.Sprintf("100.64.%d.%d", i/250, i%250+1),
			PublicKey: "k", Tags: []string{fmt.Sprintf("t%d", i%10)}, Online: true}
		if err := h.setLocked(nd); err != nil {
			b.Fatal(err)
		}
		c := NewStream(id, "", 4, func(string, bool) {})
		c.version = 2
		h.conns[id] = c
	}
	return h
}

func benchPolicySrc(n, variant int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"groups": {`)
	for g := range 50 {
		fmt.Fprintf(&sb, `"group:g%d": ["tag:t%d", "sim-%d", "sim-%d"],`, g, g%10, (g*7)%n, (g*13+1)%n)
	}
	sb.WriteString(`}, "acls": [`)
	for r := range 500 {
		fmt.Fprintf(&sb, `{"action": "accept", "src": ["group:g%d", "sim-%d"], "dst": ["tag:t%d:%d", "group:g%d:1000-2000", "sim-%d:*"]},`,
			r%50, (r*31)%n, r%10, 22+variant, (r+1)%50, (r*17)%n)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}

// BenchmarkPolicyChange10k: a policy change on a hub with 10,000
// connected nodes, up to every stream's delta being queued.
func BenchmarkPolicyChange10k(b *testing.B) {
	const n = 10000
	h := benchHubPolicy(b, n)
	pols := make([]*policy.Compiled, 2)
	for v := range pols {
		p, err := policy.Parse(benchPolicySrc(n, v))
		if err != nil {
			b.Fatal(err)
		}
		pols[v] = policy.Compile(p)
	}
	h.mu.Lock()
	h.setPolicyLocked(pols[0], benchPolicySrc(n, 0))
	h.mu.Unlock()
	i := 0
	for b.Loop() {
		start := time.Now()
		src := benchPolicySrc(n, i%2+1)
		p, _ := policy.Parse(src)
		c := policy.Compile(p)
		h.mu.Lock()
		h.setPolicyLocked(c, src)
		h.mu.Unlock()
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/change")
		for _, sc := range h.conns {
			for len(sc.send) > 0 {
				<-sc.send
			}
		}
		i++
	}
	b.ReportMetric(float64(c0(h)), "profiles")
}

func c0(h *Hub) int { return h.pol.Profiles() }

// emptyStore is a Store with nothing in it that forgets what it is told.
type emptyStore struct{}

func (emptyStore) ListNodes(context.Context) ([]control.Node, error) { return nil, nil }
func (emptyStore) Policy(context.Context) ([]byte, error)            { return nil, nil }
func (emptyStore) SaveSeen(context.Context, map[uint64]Seen, *Version) ([]uint64, error) {
	return nil, nil
}
func (emptyStore) NetmapVersion(context.Context) (Version, bool, error)         { return Version{}, false, nil }
func (emptyStore) LoadBatches(context.Context, string, uint64) ([]Batch, error) { return nil, nil }

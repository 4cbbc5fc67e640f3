package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// meshSpot is one agent of an all-pairs lab: its own site of kind, or a
// second host behind the router of the spot named behind.
type meshSpot struct {
	name   string
	kind   natlab.Kind
	behind string
	ispHop bool
	// wan is the site's WANDelay (0: right on the flat bridge).
	wan time.Duration
	// variant, when set, is the site's router variant instead of the
	// run's.
	variant *natlab.Variant
}

// withWAN returns spots with a WANDelay for every site of its own, from 5
// to 10 ms by position, so two NATs sit 10 to 20 ms apart one way, as on
// the internet.
func withWAN(spots []meshSpot) []meshSpot {
	out := slices.Clone(spots)
	for i := range out {
		if out[i].behind == "" {
			out[i].wan = time.Duration(5+i%6) * time.Millisecond
		}
	}
	return out
}

// onlySpots keeps the spots named in MESHVPN_MESH_SPOTS (comma-separated),
// all when it is unset: one pair's flake can then be run on its own, many
// times, on the same routers and WAN delays as in the whole lab.
func onlySpots(t *testing.T, spots []meshSpot) []meshSpot {
	names := os.Getenv("MESHVPN_MESH_SPOTS")
	if names == "" {
		return spots
	}
	keep := strings.Split(names, ",")
	var out []meshSpot
	for _, sp := range spots {
		if !slices.Contains(keep, sp.name) {
			continue
		}
		if sp.behind != "" && !slices.Contains(keep, sp.behind) {
			t.Fatalf("MESHVPN_MESH_SPOTS: %s sits behind %s's router: name both", sp.name, sp.behind)
		}
		out = append(out, sp)
	}
	if len(out) < 2 {
		t.Fatalf("MESHVPN_MESH_SPOTS=%q: want at least two of the lab's spots", names)
	}
	return out
}

// meshPair is one pair of an all-pairs lab and what was seen of it.
type meshPair struct {
	a, b   *meshlab.Agent
	ka, kb natlab.Kind
	want   string // "direct" or "relay"
	gap    string // known gap (direct or relayed): the relay reason expected
	// ab and ba are the last status lines a -> b and b -> a.
	ab, ba  *meshlab.PeerStatus
	pingErr error
	pingOut string
}

func (p *meshPair) name() string { return p.a.Name + "-" + p.b.Name }

// settled tells whether both sides show the path the pair should end on.
func (p *meshPair) settled() bool {
	if p.ab == nil || p.ba == nil {
		return false
	}
	direct := p.ab.Path == "direct" && p.ba.Path == "direct"
	if p.want == "direct" || (p.gap != "" && direct) {
		return direct
	}
	// A known gap has settled once the relay reason is the final one, not
	// "direct path not found yet".
	return p.ab.Path == "relay" && p.ba.Path == "relay" && p.ab.Reason != "" && p.ba.Reason != "" &&
		strings.Contains(p.ab.Reason, p.gap) && strings.Contains(p.ba.Reason, p.gap)
}

// directMs is the time to direct: the later of the two sides' first direct
// path, each counted from when that side saw the other come online.
func (p *meshPair) directMs() int64 {
	if p.ab == nil || p.ba == nil || p.ab.DirectAfterMs == 0 || p.ba.DirectAfterMs == 0 {
		return 0
	}
	return max(p.ab.DirectAfterMs, p.ba.DirectAfterMs)
}

// meshSettle is how long the pairs get, from the mesh being online, to
// reach their final path.
const meshSettle = 30 * time.Second

// runMeshPairs builds the spots on router variant v, starts every agent at
// once and checks every pair (see TestMeshAllNATPairs).
func runMeshPairs(t *testing.T, run string, v natlab.Variant, spots []meshSpot, gaps map[string]string) []*meshPair {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	sites := map[string]*natlab.Site{}
	kindOf := map[*meshlab.Agent]natlab.Kind{}
	spotOf := map[*meshlab.Agent]meshSpot{}
	var agents []*meshlab.Agent
	for _, sp := range spots {
		var h *natlab.Host
		if sp.behind != "" {
			var err error
			if h, err = sites[sp.behind].AddHost(sp.name); err != nil {
				t.Fatal(err)
			}
		} else {
			sv := v
			if sp.variant != nil {
				sv = *sp.variant
			}
			s, err := lab.AddSiteSpec(sp.name, natlab.SiteSpec{Kind: sp.kind, Variant: sv, ISPHop: sp.ispHop, WANDelay: sp.wan})
			if err != nil {
				t.Fatal(err)
			}
			sites[sp.name], h = s, s.Host
		}
		a, err := meshlab.NewAgent(coord, h, sp.name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
		kindOf[a] = sp.kind
		spotOf[a] = sp
	}
	start := time.Now()
	startOnline(t, key, agents...)
	t.Logf("all %d agents see %d online peers after %v", len(agents), len(agents)-1, time.Since(start).Round(time.Millisecond))
	ips := map[*meshlab.Agent]string{}
	for _, a := range agents {
		ips[a] = overlayIP(t, a)
	}
	checkNodesList(t, coord, agents, ips)

	var pairs []*meshPair
	for i, a := range agents {
		for _, b := range agents[i+1:] {
			p := &meshPair{a: a, b: b, ka: kindOf[a], kb: kindOf[b], want: "direct"}
			if needsRelay(spotOf[a], spotOf[b]) {
				p.want = "relay"
			}
			if r, ok := gaps[p.name()]; ok {
				p.want, p.gap = "relay", r
			}
			pairs = append(pairs, p)
		}
	}
	observePairs(t.Context(), agents, pairs, meshSettle)
	pingPairs(t.Context(), pairs, ips)
	logPairTable(t, run, pairs)

	for _, p := range pairs {
		t.Run(p.name(), func(t *testing.T) { checkPair(t, p, ips) })
	}
	return pairs
}

// checkNodesList checks the coordinator's view: every node listed, online,
// at the address its agent reports.
func checkNodesList(t *testing.T, coord *meshlab.Coordinator, agents []*meshlab.Agent, ips map[*meshlab.Agent]string) {
	t.Helper()
	nodes, err := coord.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, n := range nodes {
		if !n.Online {
			t.Errorf("nodes list: %s offline", n.Name)
		}
		byName[n.Name] = n.IP
	}
	for _, a := range agents {
		if byName[a.Name] != ips[a] {
			t.Errorf("nodes list: %s at %q, its agent says %s", a.Name, byName[a.Name], ips[a])
		}
	}
	if len(nodes) != len(agents) {
		t.Errorf("nodes list has %d nodes, want %d", len(nodes), len(agents))
	}
}

// observePairs polls every agent's status (all at once, twice a second)
// until every pair has settled or window has passed, keeping each pair's
// last status lines.
func observePairs(ctx context.Context, agents []*meshlab.Agent, pairs []*meshPair, window time.Duration) {
	deadline := time.Now().Add(window)
	for {
		statuses := make([]*meshlab.Status, len(agents))
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if st, err := a.Status(ctx); err == nil {
					statuses[i] = st
				}
			}()
		}
		wg.Wait()
		byAgent := map[*meshlab.Agent]*meshlab.Status{}
		for i, a := range agents {
			byAgent[a] = statuses[i]
		}
		all := true
		for _, p := range pairs {
			if st := byAgent[p.a]; st != nil {
				p.ab = st.Peer(p.b.Name)
			}
			if st := byAgent[p.b]; st != nil {
				p.ba = st.Peer(p.a.Name)
			}
			all = all && p.settled()
		}
		if all || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// pingPairs pings every pair over the overlay, a few pairs at a time.
func pingPairs(ctx context.Context, pairs []*meshPair, ips map[*meshlab.Agent]string) {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.pingOut, p.pingErr = pingUntil(ctx, p.a, ips[p.b], 20*time.Second)
		}()
	}
	wg.Wait()
}

// logPairTable logs one line per pair: what was expected, what each side
// shows, and the time to direct.
func logPairTable(t *testing.T, run string, pairs []*meshPair) {
	var b strings.Builder
	fmt.Fprintf(&b, "pairs on %s (time to direct from both online):\n", run)
	fmt.Fprintf(&b, "%-40s %-7s %-7s %-7s %8s  %s\n", "pair", "want", "a->b", "b->a", "direct", "reasons")
	var direct []int64
	for _, p := range pairs {
		ab, ba, ms := "?", "?", "-"
		var reasons []string
		if p.ab != nil {
			ab = p.ab.Path
			if p.ab.Reason != "" {
				reasons = append(reasons, "a: "+p.ab.Reason)
			}
			if p.ab.Path == "direct" && strings.Contains(p.ab.LastChange, "after") {
				reasons = append(reasons, p.ab.LastChange)
			}
		}
		if p.ba != nil {
			ba = p.ba.Path
			if p.ba.Reason != "" {
				reasons = append(reasons, "b: "+p.ba.Reason)
			}
		}
		if d := p.directMs(); d > 0 {
			ms = fmt.Sprintf("%.1fs", float64(d)/1000)
			if ab == "direct" && ba == "direct" {
				direct = append(direct, d)
			}
		}
		want := p.want
		if p.gap != "" {
			want = "gap"
		}
		fmt.Fprintf(&b, "%-40s %-7s %-7s %-7s %8s  %s\n", p.name(), want, ab, ba, ms, strings.Join(reasons, "; "))
	}
	if len(direct) > 0 {
		slices.Sort(direct)
		fmt.Fprintf(&b, "%d pairs direct; time to direct: median %.1fs, max %.1fs\n",
			len(direct), float64(direct[len(direct)/2])/1000, float64(direct[len(direct)-1])/1000)
	}
	t.Log(b.String())
}

// checkPair asserts what the pair should show: a direct path both ways,
// shown by packets (directPair), or a relayed one over UDP through the
// coordinator's relay with a reason (the known gaps' reason as listed);
// and a working overlay ping. Pairs run one at a time here, so a router's
// flow counters see only this pair's echoes.
func checkPair(t *testing.T, p *meshPair, ips map[*meshlab.Agent]string) {
	if p.pingErr != nil {
		t.Errorf("overlay ping %s -> %s failed: %v\n%s", p.a.Name, p.b.Name, p.pingErr, p.pingOut)
	}
	want := p.want
	if p.gap != "" && p.ab != nil && p.ba != nil && p.ab.Path == "direct" && p.ba.Path == "direct" {
		t.Logf("known gap %s went direct in this run", p.name())
		want = "direct"
	}
	for _, side := range []struct {
		from, to string
		st       *meshlab.PeerStatus
	}{{p.a.Name, p.b.Name, p.ab}, {p.b.Name, p.a.Name, p.ba}} {
		if side.st == nil {
			t.Errorf("%s does not list %s", side.from, side.to)
			continue
		}
		st := side.st
		t.Logf("%s -> %s: path=%s local=%s remote=%s endpoint=%s reason=%q direct_after=%dms",
			side.from, side.to, st.Path, st.LocalType, st.RemoteType, st.Endpoint, st.Reason, st.DirectAfterMs)
		if st.Path != want {
			t.Errorf("%s -> %s: path %q (reason %q), want %s", side.from, side.to, st.Path, st.Reason, want)
			return
		}
		if want != "relay" {
			continue
		}
		switch {
		case st.Relay == nil:
			t.Errorf("%s -> %s: path relay but no relay in status", side.from, side.to)
		case st.Relay.Transport != "udp" || !strings.HasPrefix(st.Relay.Server, meshlab.CoordinatorIP+":"):
			t.Errorf("%s -> %s: relayed over %s via %s, want udp via the coordinator %s", side.from, side.to, st.Relay.Transport, st.Relay.Server, meshlab.CoordinatorIP)
		}
		if st.Reason == "" || !strings.Contains(st.Reason, p.gap) {
			t.Errorf("%s -> %s: relay reason %q, want one containing %q", side.from, side.to, st.Reason, p.gap)
		}
	}
	if want != "direct" {
		return
	}
	ab, ba := directPair(t, p.a, p.b, ips[p.b])
	// A symmetric NAT opens a new port toward each peer, so the address
	// its peer answers is, but by chance, not the STUN-observed one: the
	// peer must have learnt it from the checks (prflx). The chance: the lab
	// router (masquerade random,fully-random) picks each new flow's port
	// uniformly from 1024-65535, so one flow in 64,512 leaves from the
	// STUN flow's port; ICE then rightly names that address by the srflx
	// candidate it equals (ICE matches a remote candidate by transport
	// address, RFC 8838 11.4). That case, and only that one, is accepted.
	for _, v := range []struct {
		view *meshlab.PeerStatus
		of   *meshlab.Agent
		kind natlab.Kind
	}{{ab, p.b, p.kb}, {ba, p.a, p.ka}} {
		if v.kind != natlab.Symmetric {
			continue
		}
		var srflx []string
		if v.view.RemoteType != "prflx" {
			srflx = ownSrflx(t, v.of)
		}
		switch ok, err := symmetricLabelOK(v.view.RemoteType, v.view.Endpoint, srflx); {
		case err != nil:
			t.Errorf("remote candidate of symmetric-NAT %s: %v", v.of.Name, err)
		case ok != "":
			t.Logf("symmetric-NAT %s: %s", v.of.Name, ok)
		}
	}
}

// symmetricLabelOK checks the label a peer gives a symmetric NAT's
// address ep, given that NAT's own srflx candidates: prflx, or srflx when
// ep is one of them. ok says why an srflx label was accepted.
func symmetricLabelOK(label, ep string, srflx []string) (ok string, err error) {
	switch {
	case label == "prflx":
		return "", nil
	case label == "srflx" && slices.Contains(srflx, ep):
		return fmt.Sprintf("its flow to the peer got the public port of its STUN flow: %s is its srflx candidate", ep), nil
	}
	return "", fmt.Errorf("%s at %s, want prflx (or srflx when it is one of the NAT's own srflx candidates %v)", label, ep, srflx)
}

// ownSrflx lists the server-reflexive addresses a's ICE sessions gathered
// (what STUN saw), from its status.
func ownSrflx(t *testing.T, a *meshlab.Agent) []string {
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range st.Self.Endpoints {
		if e.Type == "srflx" {
			out = append(out, e.Addr)
		}
	}
	return out
}

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// Helpers that show by packets, not by exit codes and status fields, that
// traffic flowed and which way it went.

// pingResult is what a kernel ping run reported.
type pingResult struct {
	Sent, Received int
	Out            string
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// pingCount sends count echo requests every interval from a to ip over the
// overlay and parses how many came back. ping exits 0 when any reply came,
// so its exit status says nothing about loss; the summary line does.
func pingCount(ctx context.Context, a *meshlab.Agent, ip string, count int, interval string) (pingResult, error) {
	out, _ := a.Host.Run(ctx, "ping", "-n", "-c", strconv.Itoa(count), "-i", interval, "-W", "2", ip)
	return parsePing(out)
}

func parsePing(out string) (pingResult, error) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return pingResult{Out: out}, fmt.Errorf("no summary line in ping output:\n%s", out)
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return pingResult{Sent: sent, Received: recv, Out: out}, nil
}

// flowCounter counts the WireGuard data messages a site's router forwards
// between its LAN and one peer address, each way: UDP whose payload starts
// with type 4 and three zero bytes, so ICE's checks on the same path do not
// count. It counts in the forward hook after the lab's own filter (priority
// 10), so dropped packets do not count.
type flowCounter struct {
	router *natlab.Host
	table  string
}

// countFlow starts counting on router the WireGuard data to and from peer.
// The counter goes away when the test ends.
func countFlow(t *testing.T, router *natlab.Host, peer netip.Addr) *flowCounter {
	t.Helper()
	f := &flowCounter{router: router, table: "flow_" + strings.NewReplacer(".", "_", ":", "_").Replace(peer.String())}
	script := fmt.Sprintf(`table ip %[1]s {
	chain forward {
		type filter hook forward priority 10; policy accept;
		ip daddr %[2]s meta l4proto udp @th,64,32 0x04000000 counter
		ip saddr %[2]s meta l4proto udp @th,64,32 0x04000000 counter
	}
}
`, f.table, peer)
	if out, err := router.Run(t.Context(), "sh", "-c", "nft -f - <<'EOF'\n"+script+"EOF\n"); err != nil {
		t.Fatalf("flow counter on %s: %v\n%s", router.Name, err, out)
	}
	t.Cleanup(func() { _, _ = router.Run(context.Background(), "nft", "delete", "table", "ip", f.table) })
	return f
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

// read returns the messages counted so far toward the peer and from it.
func (f *flowCounter) read(ctx context.Context) (out, in uint64, err error) {
	text, err := f.router.Run(ctx, "nft", "list", "table", "ip", f.table)
	if err != nil {
		return 0, 0, fmt.Errorf("read flow counter on %s: %w", f.router.Name, err)
	}
	m := nftCounter.FindAllStringSubmatch(text, -1)
	if len(m) != 2 {
		return 0, 0, fmt.Errorf("flow counter on %s: want 2 counters in:\n%s", f.router.Name, text)
	}
	out, _ = strconv.ParseUint(m[0][1], 10, 64)
	in, _ = strconv.ParseUint(m[1][1], 10, 64)
	return out, in, nil
}

// wgCounters returns from's WireGuard byte counters for peer.
func wgCounters(t *testing.T, from *meshlab.Agent, peer string) (rx, tx uint64) {
	t.Helper()
	p := peerStatus(t, from, peer)
	return p.RxBytes, p.TxBytes
}

// peerStatus reads a's status line for peer or fails the test.
func peerStatus(t *testing.T, a *meshlab.Agent, peer string) *meshlab.PeerStatus {
	t.Helper()
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p := st.Peer(peer)
	if p == nil {
		t.Fatalf("%s does not list %s", a.Name, peer)
	}
	return p
}

// icmpBytes is the least a WireGuard counter grows per echo packet: the
// inner IPv4 packet alone (20 + 8 + 56 bytes), before WireGuard's overhead.
const icmpBytes = 84

// wanAddr is the address a host's packets come from on the lab internet:
// its router's WAN address, or its own for a public host.
func wanAddr(h *natlab.Host) netip.Addr {
	if h.Site != nil && h.Site.Router != nil {
		return h.Site.PublicIP()
	}
	return h.IP
}

// endpointHost is the address part of an ip:port endpoint.
func endpointHost(ep string) string {
	ap, err := netip.ParseAddrPort(ep)
	if err != nil {
		return ep
	}
	return ap.Addr().String()
}

// echoRun is a `ping -D` run: how many echoes it sent and when each reply
// came back.
type echoRun struct {
	sent    int
	replies map[int]time.Time // by icmp_seq
}

var echoReply = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+)`)

func parseEchoes(out string) echoRun {
	e := echoRun{replies: map[int]time.Time{}}
	for _, m := range echoReply.FindAllStringSubmatch(out, -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		seq, _ := strconv.Atoi(m[3])
		if _, dup := e.replies[seq]; !dup {
			e.replies[seq] = time.Unix(sec, usec*1000)
		}
	}
	if m := pingSummary.FindStringSubmatch(out); m != nil {
		e.sent, _ = strconv.Atoi(m[1])
	}
	return e
}

// lostEcho is an echo that got no reply, and about when it was sent.
type lostEcho struct {
	seq  int
	sent time.Time
}

// lost lists the echoes without a reply. A lost echo's send time is
// reckoned from the last reply before it, at echoInterval per echo; the
// very last echo may still have been in flight when ping stopped and is
// left out.
func (e echoRun) lost() ([]lostEcho, error) {
	if e.sent == 0 {
		return nil, fmt.Errorf("ping run has no summary line")
	}
	var out []lostEcho
	last := 0
	for seq := 1; seq < e.sent; seq++ {
		if _, ok := e.replies[seq]; ok {
			last = seq
			continue
		}
		if last == 0 {
			return nil, fmt.Errorf("echo %d lost before any reply came", seq)
		}
		out = append(out, lostEcho{seq: seq, sent: e.replies[last].Add(time.Duration(seq-last) * echoInterval)})
	}
	return out, nil
}

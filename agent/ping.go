package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
)

// PingOptions configure Ping.
type PingOptions struct {
	Count    int
	Interval time.Duration
	Timeout  time.Duration // per reply
	JSON     bool          // one JSON object per line instead of text
	// UntilDirect stops at the first reply that came over a direct path;
	// Count is then the limit.
	UntilDirect bool
	// IPv6 pings the peer's IPv6 overlay address (ICMPv6); a target that
	// is an IPv6 address implies it.
	IPv6 bool
}

// PingResult counts what Ping saw.
type PingResult struct {
	Peer     string `json:"peer"`
	IP       string `json:"ip"`
	Sent     int    `json:"sent"`
	Received int    `json:"received"`
	// Direct tells whether a reply came over a direct path.
	Direct bool `json:"direct"`
}

// PingReply is one echo and the path the agent had for the peer when the
// reply came (or, without a reply, when it gave up waiting).
type PingReply struct {
	Seq        int     `json:"seq"`
	Reply      bool    `json:"reply"`
	RTTMs      float64 `json:"rtt_ms,omitempty"`
	Path       string  `json:"path"`
	Reason     string  `json:"reason,omitempty"`
	Endpoint   string  `json:"endpoint,omitempty"`
	LocalType  string  `json:"local_type,omitempty"`
	RemoteType string  `json:"remote_type,omitempty"`
	// Relay is "SERVER TRANSPORT" for a relayed path.
	Relay string `json:"relay,omitempty"`
}

// ResolvePeer finds a peer by name or overlay address (IPv4 or IPv6, in
// any spelling) in st.
func ResolvePeer(st *Status, target string) (*PeerStatus, error) {
	addr, _ := netip.ParseAddr(target)
	for i := range st.Peers {
		p := &st.Peers[i]
		if p.Name == target || p.IP == target || (addr.IsValid() && (sameAddr(p.IP, addr) || sameAddr(p.IP6, addr))) {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no peer named or addressed %q (see `meshvpn status`)", target)
}

// Ping sends ICMP echo requests to a peer's overlay address, through the
// kernel and the TUN device like any application's packets, and prints for
// each reply the path the agent had for the peer at that moment.
func Ping(ctx context.Context, c *Client, target string, opt PingOptions, out io.Writer) (PingResult, error) {
	var res PingResult
	// Naming the peer sets its path up now if it is set up on demand; the
	// first echo is queued until then.
	st, err := c.StatusPeer(ctx, target)
	if err != nil {
		return res, err
	}
	p, err := ResolvePeer(st, target)
	if err != nil {
		return res, err
	}
	if t, err := netip.ParseAddr(target); err == nil && t.Is6() && !t.Is4In6() {
		opt.IPv6 = true
	}
	dst, from, err := pingAddrs(st, p, opt.IPv6)
	if err != nil {
		return res, err
	}
	if p.PingBlocked {
		if p.Policy == "blocked by policy" {
			return res, fmt.Errorf("%s (%s): blocked by policy: this node may open no connection to it", p.Name, dst)
		}
		return res, fmt.Errorf("%s (%s): blocked by policy: ICMP is not allowed (this node may open: %s)", p.Name, dst, p.Policy)
	}
	fam := icmpFamilyFor(opt.IPv6)
	conn, network, err := fam.listen()
	if err != nil {
		return res, err
	}
	defer conn.Close()
	res.Peer, res.IP = p.Name, dst.String()
	enc := json.NewEncoder(out)
	if !opt.JSON {
		fmt.Fprintf(out, "PING %s (%s) from %s\n", p.Name, dst, from)
	}
	id := os.Getpid() & 0xffff
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if network == "udp4" || network == "udp6" {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	for seq := 1; seq <= opt.Count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return res, nil
			case <-time.After(opt.Interval):
			}
		}
		msg := icmp.Message{Type: fam.echo, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("meshvpn-ping")}}
		b, _ := msg.Marshal(nil)
		if _, err := conn.WriteTo(b, to); err != nil {
			return res, fmt.Errorf("send ping: %w", err)
		}
		res.Sent++
		rtt, ok := waitEcho(conn, fam, dst, id, seq, network != fam.raw, opt.Timeout)
		r := PingReply{Seq: seq, Reply: ok, Path: PathNone}
		if ok {
			res.Received++
			r.RTTMs = float64(rtt.Microseconds()) / 1000
		}
		if st, err := c.Status(ctx); err == nil {
			if ps, err := ResolvePeer(st, p.IP); err == nil {
				r.Path, r.Reason, r.Endpoint, r.LocalType, r.RemoteType = ps.Path, ps.Reason, ps.Endpoint, ps.LocalType, ps.RemoteType
				if ps.Path == PathRelay && ps.Relay != nil {
					r.Relay = ps.Relay.Server + " " + ps.Relay.Transport
				}
			}
		}
		if ok && r.Path == PathDirect {
			res.Direct = true
		}
		switch {
		case opt.JSON:
			_ = enc.Encode(r)
		case ok:
			fmt.Fprintf(out, "reply from %s (%s): seq=%d time=%.2f ms via %s\n", p.Name, dst, seq, r.RTTMs, describePath(&r))
		default:
			fmt.Fprintf(out, "seq=%d: no reply within %v (%s)\n", seq, opt.Timeout, describePath(&r))
		}
		if opt.UntilDirect && res.Direct {
			break
		}
	}
	if opt.JSON {
		_ = enc.Encode(res)
		return res, nil
	}
	loss := 100 * float64(res.Sent-res.Received) / float64(max(res.Sent, 1))
	fmt.Fprintf(out, "--- %s: %d sent, %d received, %.0f%% loss\n", p.Name, res.Sent, res.Received, loss)
	return res, nil
}

func describePath(p *PingReply) string {
	switch p.Path {
	case PathDirect:
		return fmt.Sprintf("%s %s (local %s, remote %s)", p.Path, p.Endpoint, p.LocalType, p.RemoteType)
	case PathRelay:
		s := "relay"
		if p.Relay != "" {
			s += " " + p.Relay
		}
		if p.Reason != "" {
			s += " (" + p.Reason + ")"
		}
		return s
	default:
		if p.Reason != "" {
			return p.Path + ": " + p.Reason
		}
		return p.Path
	}
}

// waitEcho reads until the matching echo reply arrives or the timeout passes.
// An unprivileged ping socket rewrites the ID, so only seq is matched there.
func waitEcho(c *icmp.PacketConn, fam icmpFamily, from netip.Addr, id, seq int, dgram bool, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(timeout)
	buf := make([]byte, 1500)
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			return 0, false
		}
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return 0, false
		}
		var src netip.Addr
		switch a := peer.(type) {
		case *net.IPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		case *net.UDPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		}
		if src.Unmap() != from {
			continue
		}
		m, err := icmp.ParseMessage(fam.proto, buf[:n])
		if err != nil || m.Type != fam.reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.Seq != seq || (!dgram && e.ID != id) {
			continue
		}
		return time.Since(start), true
	}
}

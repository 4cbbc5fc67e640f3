package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshvpn/meshvpn/meshdns"
)

// The local API is HTTP on a unix socket; only root (or the socket's group)
// may talk to it.
const (
	pathStatus = "/v1/status"
	pathDown   = "/v1/down"
)

func listenLocalAPI(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another meshvpn agent is already running on %s", path)
	}
	_ = os.Remove(path) // stale socket of an agent that crashed
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

func serveLocalAPI(l net.Listener, a *Agent) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, r *http.Request) {
		if target := r.URL.Query().Get("peer"); target != "" {
			a.wakeFor(target) // lazy.go: status --peer and ping ask for a path
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Status())
	})
	mux.HandleFunc("POST "+pathDown, func(w http.ResponseWriter, r *http.Request) {
		a.log.Info("shutdown requested over the local API")
		w.WriteHeader(http.StatusNoContent)
		a.stop()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	_ = srv.Serve(l)
}

// Status reports this node and the path to every peer.
func (a *Agent) Status() Status {
	a.mu.Lock()
	self := a.self
	peers := make([]*peer, 0, len(a.peers))
	for _, p := range a.peers {
		peers = append(peers, p)
	}
	a.mu.Unlock()
	connected, lastErr := a.ctl.status()
	st := Status{
		Self: SelfStatus{
			ID:         self.ID,
			Name:       self.Name,
			IP:         self.IP,
			IP6:        a.selfIP6(self),
			PublicKey:  a.pub.String(),
			Tags:       nonNil(self.Tags),
			ListenPort: int(a.bind.Port()),
			TUN:        a.tun.IfName(),
			Endpoints:  []EndpointStatus{},
			Relays:     []RelayStatus{},
			PortMap:    a.portmapStatus(),
			DNS:        a.dnsStatus(),
			LazyPeers:  a.cfg.LazyPeers,
			Lazy:       a.lazyActive.Load(),
			LazyIdleS:  int(a.lazyIdle() / time.Second),
		},
		Coordinator:    CoordinatorStatus{URL: a.ctl.coordinatorURL().String(), Connected: connected, LastError: lastErr},
		Peers:          []PeerStatus{},
		WireGuardPeers: []string{},
	}
	wg, err := a.wg.stats()
	if err != nil {
		a.log.Warn("status", "err", err)
	}
	env := a.pathEnv()
	env.coordDown = !connected
	st.Self.NAT = env.localNAT
	chosen := a.relays.choice()
	for _, c := range a.relays.snapshot() {
		rs := RelayStatus{URL: c.URL, Server: c.Server, Transport: c.Transport, Available: c.OK, Error: c.Err, Node: c.Node}
		rs.Chosen = chosen != nil && chosen.URL == c.URL
		if c.OK {
			rs.RTTMs = float64(c.RTT.Microseconds()) / 1000
		}
		if !c.Checked.IsZero() {
			rs.Checked = c.Checked.UTC().Format(time.RFC3339)
		}
		st.Self.Relays = append(st.Self.Relays, rs)
	}
	for hexKey := range wg {
		if k, err := parseHexKey(hexKey); err == nil {
			st.WireGuardPeers = append(st.WireGuardPeers, k.String())
		}
	}
	slices.Sort(st.WireGuardPeers)
	seen := map[string]bool{}
	domain := st.Self.DNS.Domain
	for _, p := range peers {
		s, ok := wg[p.key.Hex()]
		ps := p.status(s, ok, env)
		ps.DNSName = meshdns.FQDN(ps.Name, domain)
		if ip, err := netip.ParseAddr(ps.IP); err == nil && a.filter != nil {
			ps.Policy, ps.PingBlocked, ps.PolicyDropsIn, ps.PolicyDropsOut = a.filter.PeerInfo(ip)
		}
		st.Peers = append(st.Peers, ps)
		for _, e := range p.localEndpoints() {
			if !seen[e.Addr] {
				seen[e.Addr] = true
				st.Self.Endpoints = append(st.Self.Endpoints, e)
			}
		}
	}
	if e, ok := a.portmapEndpoint(); ok {
		st.Self.Endpoints = append(st.Self.Endpoints, e)
	}
	slices.SortFunc(st.Self.Endpoints, func(x, y EndpointStatus) int {
		if x.Type != y.Type {
			return compareStr(x.Type, y.Type)
		}
		return compareStr(x.Addr, y.Addr)
	})
	sortPeers(st.Peers)
	return st
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// localEndpoints lists the local candidates of the peer's current sessions.
func (p *peer) localEndpoints() []EndpointStatus {
	p.mu.Lock()
	agents := []*ice.Agent{p.direct.ice, p.relay.ice}
	p.mu.Unlock()
	var cands []ice.Candidate
	for _, agent := range agents {
		if agent == nil {
			continue
		}
		if cs, err := agent.GetLocalCandidates(); err == nil {
			cands = append(cands, cs...)
		}
	}
	var out []EndpointStatus
	for _, c := range cands {
		if c.Type() == ice.CandidateTypePeerReflexive {
			continue
		}
		out = append(out, EndpointStatus{
			Addr: net.JoinHostPort(c.Address(), strconv.Itoa(c.Port())),
			Type: c.Type().String(),
		})
	}
	return out
}

// Client talks to a running agent over its unix socket.
type Client struct {
	Socket string
}

func (c *Client) httpClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", c.Socket)
			},
		},
	}
}

// Status fetches the agent's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return c.StatusPeer(ctx, "")
}

// StatusPeer fetches the agent's status and, for a peer (name or overlay
// address) whose path is set up on demand, asks the agent to set it up.
func (c *Client) StatusPeer(ctx context.Context, peer string) (*Status, error) {
	u := "http://meshvpn" + pathStatus
	if peer != "" {
		u += "?" + url.Values{"peer": {peer}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || isConnRefused(err) {
			return nil, fmt.Errorf("no meshvpn agent is running on %s (start it with `meshvpn up`)", c.Socket)
		}
		return nil, fmt.Errorf("talk to agent on %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("agent status: HTTP %d: %s", resp.StatusCode, b)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode agent status: %w", err)
	}
	return &st, nil
}

// Down asks the agent to shut down, as SIGTERM would.
func (c *Client) Down(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://meshvpn"+pathDown, nil)
	if err != nil {
		return err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || isConnRefused(err) {
			return fmt.Errorf("no meshvpn agent is running on %s", c.Socket)
		}
		return fmt.Errorf("talk to agent on %s: %w", c.Socket, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("agent refused to shut down: HTTP %d", resp.StatusCode)
	}
	return nil
}

func isConnRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

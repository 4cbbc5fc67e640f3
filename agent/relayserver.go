package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/logsafe"
	"github.com/meshvpn/meshvpn/relay"
)

// RelayServerConfig runs a peer relay on this node (meshvpn up
// --relay-server): a TURN server (package relay, as the coordinator's)
// that the coordinator lists to the other nodes.
type RelayServerConfig struct {
	// Listen is the UDP and TCP address; empty runs no relay.
	Listen string
	// Public is IPv4:port where other nodes reach it (a port mapping's
	// outside); empty: the host's first global IPv4 and the listen port.
	Public string
	// MinPort and MaxPort bound the relay ports (default 49152-65535).
	MinPort, MaxPort uint16
}

// peerRelay is this node's relay server and its reports to the
// coordinator.
type peerRelay struct {
	a      *Agent
	srv    *relay.Server
	public string
	// secret is the relay's own secret from the coordinator; nil until the
	// first offer is answered, and every credential is refused until then.
	secret atomic.Pointer[[]byte]
	// carry is usage not yet reported (a report that failed).
	carry map[uint64]relay.Counts
}

// startRelayServer starts the peer relay and its offer loop. Who may relay
// through it: members of the mesh (credentials minted by the coordinator
// with this relay's secret), to its own allocations and to the mesh's
// other relays only (relayPeerOK). So a member cannot use it to reach the
// relay host's services or LAN, nor any third party on the internet.
func (a *Agent) startRelayServer(ctx context.Context, credential string) (*peerRelay, error) {
	cfg := a.cfg.RelayServer
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("relay listen address %q: %w", cfg.Listen, err)
	}
	public := cfg.Public
	var ip netip.Addr
	if public != "" {
		ap, err := netip.ParseAddrPort(public)
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("relay public address %q: want IPv4:port", public)
		}
		ip = ap.Addr()
	} else {
		if ip, err = relay.PickAddress("", host); err != nil {
			return nil, fmt.Errorf("relay server: %w (set --relay-public)", err)
		}
	}
	p := &peerRelay{a: a, carry: map[uint64]relay.Counts{}}
	p.srv, err = relay.Listen(relay.Config{
		Listen: cfg.Listen, RelayIP: ip, MinPort: cfg.MinPort, MaxPort: cfg.MaxPort,
		OnlyPeers: a.relayPeerOK,
		// Behind a full-cone NAT or a port mapping the relay address is
		// the router's: two allocations reach each other on this host.
		Hairpin: true,
		Secret: func() []byte {
			if s := p.secret.Load(); s != nil {
				return *s
			}
			return nil
		},
		Active:  a.isMember,
		Members: a.memberCount,
		Log:     a.log.With("part", "relay-server"),
	})
	if err != nil {
		return nil, fmt.Errorf("relay server: %w", err)
	}
	if public == "" {
		public = net.JoinHostPort(ip.String(), strconv.Itoa(p.srv.UDPPort()))
		if port != "0" && port != "" {
			public = net.JoinHostPort(ip.String(), port)
		}
	}
	p.public = public
	p.srv.Usage().TakePending(time.Now()) // start counting what to report
	a.log.Info("relay server up", "listen", p.srv.UDPConn().LocalAddr().String(), "public", public)
	go p.offerLoop(ctx, credential)
	return p, nil
}

func (p *peerRelay) close() { p.srv.Close() }

// offerLoop offers the relay and reports its usage, every interval the
// coordinator asks for; after a failure it retries sooner.
func (p *peerRelay) offerLoop(ctx context.Context, credential string) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		resp, err := p.offer(ctx, credential)
		switch {
		case err != nil:
			p.a.logLimit.Log(p.a.log, slog.LevelWarn, "relay offer failed", "err", logsafe.Clip(err.Error()))
			wait = 5 * time.Second
		default:
			if !resp.Listed {
				p.a.logLimit.Log(p.a.log, slog.LevelWarn, "relay not listed by the coordinator", "reason", logsafe.Clip(resp.Reason))
			}
			wait = time.Duration(min(max(resp.Every, 5), 300)) * time.Second
		}
	}
}

// offer posts one offer with the usage counted since the last one that
// got through.
func (p *peerRelay) offer(ctx context.Context, credential string) (*control.RelayOfferResponse, error) {
	for id, c := range p.srv.Usage().TakePending(time.Now()) {
		sum := p.carry[id]
		sum.Add(c)
		p.carry[id] = sum
	}
	req := control.RelayOffer{Addr: p.public}
	for id, c := range p.carry {
		if len(req.Usage) == control.MaxRelayUsageRows {
			break
		}
		req.Usage = append(req.Usage, control.RelayUsage{Node: id, BytesIn: c.BytesIn, PacketsIn: c.PacketsIn, BytesOut: c.BytesOut, PacketsOut: c.PacketsOut})
	}
	var resp control.RelayOfferResponse
	if err := p.a.ctl.postJSON(ctx, control.PathRelayOffer, credential, req, &resp); err != nil {
		return nil, err
	}
	for _, u := range req.Usage {
		delete(p.carry, u.Node)
	}
	if resp.Secret == "" {
		return nil, errors.New("relay offer: no secret in the answer")
	}
	s := []byte(resp.Secret)
	p.secret.Store(&s)
	return &resp, nil
}

// postJSON posts in to the coordinator at path with the node's bearer
// credential and decodes the answer into out.
func (c *controlClient) postJSON(ctx context.Context, path, credential string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.coordinatorURL().JoinPath(path).String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+credential)
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s answer: %w", path, err)
	}
	if hresp.StatusCode != http.StatusOK {
		var e control.Error
		msg := http.StatusText(hresp.StatusCode)
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = logsafe.Clip(e.Error)
		}
		return fmt.Errorf("%s: HTTP %d: %s", path, hresp.StatusCode, msg)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// dropRelayClient closes the allocations a node that left the netmap holds
// on this node's peer relay: relayed data carries no credential, so
// refusing its credential alone would let it relay on until they expire.
func (a *Agent) dropRelayClient(id uint64) {
	if p := a.relaySrv.Load(); p != nil {
		p.srv.DropNode(id)
	}
}

// isMember tells whether node is this node or a peer in its netmap.
func (a *Agent) isMember(node uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return node == a.self.ID || a.peers[node] != nil
}

// memberCount is how many nodes this node's netmap holds.
func (a *Agent) memberCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.peers) + 1
}

// relayPeerOK tells whether the peer relay may relay to ip besides its own
// allocations: only to the other relays of the mesh, as this node's relay
// list names them (a relayed path between two nodes on two relays runs
// from one relay to the other).
func (a *Agent) relayPeerOK(ip netip.Addr) bool {
	for _, c := range a.relays.snapshot() {
		host, _, err := net.SplitHostPort(c.Server)
		if err != nil {
			continue
		}
		if h, err := netip.ParseAddr(host); err == nil && h.Unmap() == ip {
			return true
		}
	}
	return false
}

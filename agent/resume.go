package agent

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// streamQuery is the stream URL's query: our protocol version and, after
// the first netmap, the netmap version we hold, so that a coordinator that
// still knows what changed since then sends only that (see
// control.MsgResume).
func (c *controlClient) streamQuery() string {
	q := url.Values{"v": {strconv.Itoa(control.ProtocolVersion)}}
	c.mu.Lock()
	if c.since != "" {
		q.Set(control.QuerySince, c.since)
	}
	c.mu.Unlock()
	return q.Encode()
}

// noteVersion records the netmap version a frame brought us to, once the
// frame was applied. A netmap or delta without one (an older coordinator)
// forgets it: what we hold can no longer be named.
func (c *controlClient) noteVersion(m control.Message) {
	switch m.Type {
	case control.MsgNetmap, control.MsgDelta, control.MsgResume:
	default:
		return
	}
	c.mu.Lock()
	c.since = m.NetmapVersion
	c.mu.Unlock()
}

// pingLoop probes the stream when there is another coordinator to move to:
// one that does not answer within failoverPing is given up (stop ends the
// stream), so the agent moves on within seconds instead of waiting for TCP
// to notice.
func (c *controlClient) pingLoop(ctx context.Context, ws *websocket.Conn, stop func()) {
	t := time.NewTicker(failoverPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, failoverPing)
		err := ws.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("coordinator not answering pings, leaving it", "url", c.coordinatorURL().String(), "err", err)
				c.mu.Lock()
				c.lastErr = "not answering pings"
				c.pingLost = true
				c.mu.Unlock()
			}
			stop()
			return
		}
	}
}

// applyServerFields takes the parts of a resume's netmap other than the
// peers (STUN, relays, DNS, self): they may differ between coordinators of
// one mesh, so a resume after fail-over brings the new one's.
func (a *Agent) applyServerFields(nm *control.Netmap) {
	a.mu.Lock()
	a.stun = slices.Clone(nm.STUN)
	a.stun6 = slices.Clone(nm.STUN6)
	a.stunAlt = nil
	a.stunServers = slices.Clone(nm.STUNServers)
	for _, srv := range nm.STUNServers {
		if srv.Alternate != "" {
			a.stunAlt = append(a.stunAlt, srv.Alternate)
		}
	}
	if nm.Self.ID != 0 {
		self := nm.Self
		self.PublicKey = a.pub.String()
		a.self = self
	}
	a.mu.Unlock()
	if nm.Relays != nil {
		a.relays.set(nm.Relays)
	}
	a.setDNSDomain(nm.DNS)
}

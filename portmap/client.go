package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// mapper is one protocol's client.
type mapper interface {
	protocol() Protocol
	// probe tells whether the gateway speaks the protocol, and its
	// external address when the protocol says it on the way.
	probe(ctx context.Context) (netip.Addr, error)
	// mapPort asks for a UDP mapping of internal, for the external port
	// wantExternal if it can (0: any).
	mapPort(ctx context.Context, internal, wantExternal uint16, lease time.Duration) (Mapping, error)
	unmap(ctx context.Context, m Mapping) error
	// checkEpoch reports whether the gateway lost its mappings since the
	// last answer (NAT-PMP and PCP; UPnP cannot tell).
	checkEpoch(ctx context.Context) (bool, error)
}

// preference is the order in which working protocols are used: PCP and
// NAT-PMP are one datagram each way and report reboots; UPnP is SOAP.
var preference = []Protocol{PCP, NATPMP, UPnP}

// Client keeps one UDP port mapped on the gateway. Its methods are safe for
// concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	gw       netip.Addr // gateway of the mapping
	m        mapper
	cur      Mapping
	have     bool
	internal uint16
}

// NewClient returns a client; nothing is sent before Map.
func NewClient(cfg Config) *Client {
	cfg = cfg.withDefaults()
	return &Client{cfg: cfg, log: cfg.Logger.With("component", "portmap")}
}

// Map probes the gateway's protocols in parallel and maps internalPort with
// the first that works. A mapping that already exists is replaced.
func (c *Client) Map(ctx context.Context, internalPort uint16) (Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mapLocked(ctx, internalPort, 0)
}

func (c *Client) mapLocked(ctx context.Context, internalPort, wantExternal uint16) (Mapping, error) {
	if internalPort == 0 {
		return Mapping{}, errors.New("portmap: internal port 0")
	}
	found, err := probeAll(ctx, c.cfg, false)
	if err != nil {
		return Mapping{}, err
	}
	if len(found.working) == 0 {
		return Mapping{}, fmt.Errorf("%w (gateway %s: %s)", ErrNoGateway, found.result.Gateway, found.result.errorText())
	}
	var errs []error
	for _, m := range found.working {
		mctx, cancel := context.WithTimeout(ctx, mapTimeout)
		mp, err := m.mapPort(mctx, internalPort, wantExternal, c.cfg.Lease)
		err = bounded(err)
		cancel()
		if err != nil {
			c.log.Debug("port mapping refused", "protocol", m.protocol(), "gateway", found.result.Gateway, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", m.protocol(), err))
			continue
		}
		c.m, c.cur, c.have, c.internal, c.gw = m, mp, true, internalPort, found.result.Gateway
		c.log.Info("port mapped", "protocol", mp.Protocol, "external", mp.External, "internal_port", internalPort, "lease", mp.Lease)
		return mp, nil
	}
	return Mapping{}, fmt.Errorf("portmap: gateway %s: %w", found.result.Gateway, errors.Join(errs...))
}

// Current returns the mapping in force, if any.
func (c *Client) Current() (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.have
}

// Refresh keeps the mapping alive: it renews it at half-life, asking for the
// same external port, and maps again at once when the gateway lost its
// mappings (a NAT-PMP/PCP epoch that went back: the router rebooted). It
// returns the mapping in force, which may differ from the previous one.
// Call it every minute or so.
func (c *Client) Refresh(ctx context.Context) (Mapping, error) {
	return c.refresh(ctx, false)
}

// Renew renews the mapping now, for the same external port, whether due or
// not: after the gateway announced a change (see Announcements).
func (c *Client) Renew(ctx context.Context) (Mapping, error) {
	return c.refresh(ctx, true)
}

func (c *Client) refresh(ctx context.Context, force bool) (Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.have {
		return Mapping{}, errors.New("portmap: nothing mapped")
	}
	now := time.Now()
	due := force || !now.Before(c.cur.RenewAt(c.cfg.Lease))
	if !due {
		cctx, cancel := context.WithTimeout(ctx, mapTimeout)
		reset, err := c.m.checkEpoch(cctx)
		err = bounded(err)
		cancel()
		if err != nil {
			// An unanswered check is not a lost mapping: the lease runs on.
			c.log.Debug("gateway epoch check failed", "err", err)
			return c.cur, nil
		}
		if !reset {
			return c.cur, nil
		}
		c.log.Warn("gateway lost its mappings (epoch went back: rebooted?); mapping again", "protocol", c.cur.Protocol)
	}
	mctx, cancel := context.WithTimeout(ctx, mapTimeout)
	mp, err := c.m.mapPort(mctx, c.internal, c.cur.External.Port(), c.cfg.Lease)
	err = bounded(err)
	cancel()
	if err == nil {
		if mp.External != c.cur.External {
			c.log.Info("port mapping changed", "old", c.cur.External, "new", mp.External)
		}
		c.cur = mp
		return mp, nil
	}
	c.log.Warn("port mapping renewal failed; probing the gateway again", "protocol", c.cur.Protocol, "err", err)
	old := c.cur
	c.have = false
	mp, err = c.mapLocked(ctx, c.internal, old.External.Port())
	if err != nil {
		if now.Before(old.Expires()) || old.Lease == 0 {
			// Still leased: keep offering it until it runs out.
			c.cur, c.have = old, true
			return old, fmt.Errorf("renew port mapping: %w", err)
		}
		return Mapping{}, fmt.Errorf("port mapping expired and could not be renewed: %w", err)
	}
	return mp, nil
}

// Close deletes the mapping from the gateway (within two seconds).
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.have {
		return nil
	}
	c.have = false
	ctx, cancel := context.WithTimeout(context.Background(), mapTimeout)
	defer cancel()
	if err := bounded(c.m.unmap(ctx, c.cur)); err != nil {
		c.log.Warn("delete port mapping", "protocol", c.cur.Protocol, "external", c.cur.External, "err", err)
		return fmt.Errorf("delete port mapping %s: %w", c.cur.External, err)
	}
	c.log.Info("port mapping deleted", "protocol", c.cur.Protocol, "external", c.cur.External)
	return nil
}

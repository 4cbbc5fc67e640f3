package agent

import (
	"errors"
	"net/url"
	"strings"
	"time"
)

// Fail-over between coordinators of one mesh. They share one store, so the
// node's credential is good at each; the agent holds one stream at a time
// and moves on when it breaks and the same coordinator cannot be reached
// again, or when it stops answering pings.
const (
	// failoverPing is how often a stream is probed when there is somewhere
	// to move to; a coordinator that does not answer within failoverPing is
	// left, so an unreachable one is noticed within 2*failoverPing.
	failoverPing = 1500 * time.Millisecond
	// failoverDial bounds one stream or register attempt when another
	// coordinator could answer instead (15 s with only one).
	failoverDial = 3 * time.Second
	// failoverMaxBackoff caps the wait between rounds over all
	// coordinators, so a coordinator that comes back (or a standby that
	// starts) is found within a few seconds.
	failoverMaxBackoff = 3 * time.Second
)

// ParseCoordinators splits --coordinator values (each may be a
// comma-separated list) into checked URLs, dropping repeats.
func ParseCoordinators(values []string) ([]*url.URL, error) {
	var out []*url.URL
	seen := map[string]bool{}
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			u, err := parseCoordinatorURL(s)
			if err != nil {
				return nil, err
			}
			if seen[u.String()] {
				continue
			}
			seen[u.String()] = true
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--coordinator URL is required (e.g. https://coord.example.com)")
	}
	return out, nil
}

// coordinatorURL is the coordinator in use.
func (c *controlClient) coordinatorURL() *url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bases[c.cur]
}

// hasURL tells whether s is one of the configured coordinators.
func (c *controlClient) hasURL(s string) bool {
	for _, u := range c.bases {
		if u.String() == s {
			return true
		}
	}
	return false
}

// moveOn switches to the next coordinator and reports whether a whole round
// over all of them has just ended (time to back off).
func (c *controlClient) moveOn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = (c.cur + 1) % len(c.bases)
	if len(c.bases) > 1 {
		c.log.Warn("moving to another coordinator", "url", c.bases[c.cur].String())
	}
	c.tried++
	if c.tried >= len(c.bases) {
		c.tried = 0
		return true
	}
	return false
}

// reached resets the round count after a coordinator answered.
func (c *controlClient) reached() {
	c.mu.Lock()
	c.tried = 0
	c.mu.Unlock()
}

func (c *controlClient) multi() bool { return len(c.bases) > 1 }

// dialTimeout bounds one attempt at a coordinator.
func (c *controlClient) dialTimeout() time.Duration {
	if c.multi() {
		return failoverDial
	}
	return 15 * time.Second
}

// nextBackoff is the wait after a failed round, shorter when there are
// standbys to find.
func (c *controlClient) nextBackoff(b *backoff) time.Duration {
	d := b.next()
	if c.multi() && d > failoverMaxBackoff {
		d = failoverMaxBackoff
	}
	return d
}

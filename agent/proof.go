package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/meshvpn/meshvpn/control"
)

// errNoChallenge means the coordinator predates proofs of possession (it
// has no challenge endpoint); the request then goes without one.
var errNoChallenge = errors.New("coordinator issues no challenges")

// prove fills req.Challenge and req.Proof: a fresh challenge from the
// coordinator, MACed with the secret of our private key and the
// coordinator's key. It lets the coordinator re-admit our public key by
// auth key (after an expiry, say) while refusing anyone else who names it.
func (c *controlClient) prove(ctx context.Context, req *control.RegisterRequest) error {
	ch, err := c.challenge(ctx)
	if err != nil {
		return err
	}
	coordKey, err := parseKey(ch.CoordinatorKey)
	if err != nil {
		return errors.New("coordinator sent an invalid key with its challenge")
	}
	shared, err := c.priv.shared(coordKey)
	if err != nil {
		return fmt.Errorf("coordinator's key: %w", err)
	}
	req.Challenge = ch.Challenge
	req.Proof = control.RegisterProof(shared, ch.CoordinatorKey, req)
	return nil
}

func (c *controlClient) challenge(ctx context.Context) (*control.Challenge, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, c.coordinatorURL().JoinPath(control.PathChallenge).String(), nil)
	if err != nil {
		return nil, err
	}
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	switch {
	case hresp.StatusCode == http.StatusNotFound:
		return nil, errNoChallenge
	case hresp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("challenge: HTTP %d", hresp.StatusCode)
	}
	var ch control.Challenge
	if err := json.Unmarshal(data, &ch); err != nil || ch.Challenge == "" {
		return nil, fmt.Errorf("decode challenge: invalid answer")
	}
	return &ch, nil
}

// isStaleChallenge tells the coordinator's refusal of a challenge that
// expired or was used (a coordinator restart, a slow request): a fresh
// one will do.
func isStaleChallenge(err error) bool {
	var refused *refusedError
	return errors.As(err, &refused) && strings.HasPrefix(refused.msg, "registration challenge expired")
}

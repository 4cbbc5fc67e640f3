package meshlab

import (
	"context"
	"time"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// WaitAll polls every agent's status until check passes for each, and
// stops early when one of them dies.
func WaitAll(ctx context.Context, agents []*Agent, timeout time.Duration, check func(*Agent, *Status) error) error {
	return natlab.Poll(ctx, timeout, time.Second, func() error {
		for _, a := range agents {
			if err := a.Running(); err != nil {
				return natlab.Fatal(err)
			}
			st, err := a.Status(ctx)
			if err != nil {
				return err
			}
			if err := check(a, st); err != nil {
				return err
			}
		}
		return nil
	})
}

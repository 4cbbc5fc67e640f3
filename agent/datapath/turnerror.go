package datapath

import (
	"context"
	"errors"
	"strings"
)

// ExplainTURNError turns a TURN client's errors (ours or pion's) into what
// a user can act on.
func ExplainTURNError(err error, ctx context.Context) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "401") || strings.Contains(s, "Unauthorized"):
		return errors.New("credentials refused (401)")
	case ctx.Err() != nil || strings.Contains(s, "timeout") || strings.Contains(s, "deadline"):
		return errors.New("no answer (server down, or this transport blocked on the way)")
	}
	return err
}

package natlab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// Fatal marks an error returned to Poll as final: Poll stops and returns it.
func Fatal(err error) error { return fatalError{err} }

// Poll calls check every interval until it returns nil, returns an error
// made with Fatal, ctx ends, or timeout passes. It is bounded both in time
// and in the number of attempts. On timeout the error wraps ErrTimeout and
// carries check's last complaint, so failures say what was awaited.
// A nil ctx means context.Background().
func Poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	if ctx == nil {
		ctx = context.Background()
	}
	deadline := time.Now().Add(timeout)
	attempts := int(timeout/interval) + 1
	var last error
	for i := 0; i < attempts; i++ {
		last = check()
		if last == nil {
			return nil
		}
		var fe fatalError
		if errors.As(last, &fe) {
			return fe.err
		}
		if time.Now().Add(interval).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(interval):
		}
	}
	return fmt.Errorf("%w after %v: %v", ErrTimeout, timeout, last)
}

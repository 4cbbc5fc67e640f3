package coordinator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestStoreRegisterFigures registers nodes on each engine, one at a time
// and from 8 goroutines, and logs the rate and the time per join. It is a
// measurement (go test -run TestStoreRegisterFigures -v), skipped in
// -short runs.
func TestStoreRegisterFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	const n = 500
	for _, e := range storeEngines(t) {
		t.Run(e.name, func(t *testing.T) {
			if e.setup != nil {
				e.setup(t)
			}
			for _, workers := range []int{1, 8} {
				st, _ := e.open(t)
				key := newKey(t, st, true, 0)
				keys := make([]string, n)
				for i := range keys {
					keys[i] = newPublicKey(t)
				}
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				start := time.Now()
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < n; i += workers {
							req := control.RegisterRequest{AuthKey: key, PublicKey: keys[i], Hostname: fmt.Sprintf("n%d", i)}
							if _, err := st.Register(context.Background(), req); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				took := time.Since(start)
				close(errs)
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %d registrations from %d goroutines in %v: %.0f/s, %v each",
					e.name, n, workers, took.Round(time.Millisecond), float64(n)/took.Seconds(), (took / n).Round(time.Microsecond))
			}
		})
	}
}

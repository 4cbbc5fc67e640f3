package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Swarm is a set of simulated nodes held on a coordinator that someone
// else runs (a lab's), so that a real agent can be measured among them
// (make bench-mesh-sim). The nodes register and hold their streams, and
// read and discard every frame: signals to them go unanswered, so a real
// agent's sessions with them never complete.
type Swarm struct {
	agents []*simAgent
	// Lost counts streams the coordinator ended while the swarm was up.
	Lost    atomic.Int64
	Frames  atomic.Int64
	closing atomic.Bool
	wg      sync.WaitGroup
}

// SwarmConfig says where and how many.
type SwarmConfig struct {
	// URL is the coordinator's base URL (http://host:port).
	URL     string
	AuthKey string
	N       int
	// Workers is how many registrations and dials run at once (default 16).
	Workers int
	// HTTP dials the coordinator (a lab namespace's dialer, say).
	HTTP *http.Client
}

// JoinSwarm registers cfg.N simulated nodes and opens their streams. On
// error the nodes already up are closed.
func JoinSwarm(ctx context.Context, cfg SwarmConfig) (*Swarm, error) {
	if cfg.N < 1 || cfg.HTTP == nil || cfg.URL == "" {
		return nil, errors.New("loadgen: swarm needs N >= 1, a URL and an HTTP client")
	}
	workers := cfg.Workers
	if workers < 1 {
		workers = 16
	}
	base := strings.TrimSuffix(cfg.URL, "/")
	wsBase := "ws" + strings.TrimPrefix(base, "http")
	s := &Swarm{agents: make([]*simAgent, cfg.N)}
	jobs := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				a := &simAgent{index: i, pub: newPublicKey()}
				err := a.register(ctx, cfg.HTTP, base, cfg.AuthKey)
				if err == nil {
					err = a.dial(ctx, cfg.HTTP, wsBase)
				}
				if err != nil {
					errc <- err
					return
				}
				s.agents[i] = a
				s.wg.Add(1)
				go s.hold(a)
			}
		}()
	}
	var err error
feed:
	for i := range cfg.N {
		select {
		case jobs <- i:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("loadgen: swarm: %w", err)
	}
	return s, nil
}

// hold reads and discards the node's frames until its stream ends.
func (s *Swarm) hold(a *simAgent) {
	defer s.wg.Done()
	for {
		_, r, err := a.ws.Reader(context.Background())
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if err != nil {
			if !s.closing.Load() {
				s.Lost.Add(1)
			}
			return
		}
		s.Frames.Add(1)
	}
}

// Close ends every stream.
func (s *Swarm) Close() {
	s.closing.Store(true)
	for _, a := range s.agents {
		if a != nil && a.ws != nil {
			a.ws.Close(websocket.StatusNormalClosure, "")
		}
	}
	s.wg.Wait()
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// Removal reasons kept in the store's tombstones.
const (
	reasonOperator  = "removed by operator"
	reasonEphemeral = "ephemeral node offline"
)

// lifecycle is the server's part in adding and removing nodes beyond
// registration: ephemeral deadlines and listeners for nodes that leave.
type lifecycle struct {
	ephemeral *ephemeralTracker

	mu   sync.Mutex
	gone []func(id uint64)
}

// RemoveNode removes the node named by ref (ID, name or overlay IP) from the
// store and from the live mesh: every connected agent is told at once and the
// node's own stream is closed. From then on its credential is refused with
// "node removed".
func (s *Server) RemoveNode(ctx context.Context, ref string) (NodeRecord, error) {
	return s.removeNode(ctx, ref, reasonOperator)
}

func (s *Server) removeNode(ctx context.Context, ref, reason string) (NodeRecord, error) {
	r, err := s.store.RemoveNode(ctx, ref, reason)
	if err != nil {
		return NodeRecord{}, err
	}
	s.nodeGone(r.ID, control.ReasonNodeRemoved)
	s.log.Info("node removed", "node", r.ID, "name", r.Name, "ip", r.IP, "reason", reason)
	return r, nil
}

// ExpireNode expires the node named by ref: like a removal for its peers and
// its stream, but the node stays in the store and may join again with an
// auth key, keeping its name and address.
func (s *Server) ExpireNode(ctx context.Context, ref string) (NodeRecord, error) {
	r, err := s.store.ExpireNode(ctx, ref)
	if err != nil {
		return NodeRecord{}, err
	}
	s.nodeGone(r.ID, control.ReasonNodeExpired)
	s.log.Info("node expired", "node", r.ID, "name", r.Name, "ip", r.IP)
	return r, nil
}

// RenameNode renames the node named by ref; its peers see the new name.
func (s *Server) RenameNode(ctx context.Context, ref, name string) (NodeRecord, error) {
	r, err := s.store.RenameNode(ctx, ref, name)
	if err != nil {
		return NodeRecord{}, err
	}
	if n, ok := s.hub.Node(r.ID); ok && n.Name != r.Name {
		n.Name = r.Name
		s.hub.Upsert(n)
	}
	s.log.Info("node renamed", "node", r.ID, "name", r.Name)
	return r, nil
}

// nodeGone takes a node that left the store out of the live mesh and tells
// whoever listens (the TURN server drops its allocations, say).
func (s *Server) nodeGone(id uint64, reason string) {
	s.hub.Remove(id, reason)
	s.life.ephemeral.forget(id)
	s.life.mu.Lock()
	fns := s.life.gone
	s.life.mu.Unlock()
	for _, fn := range fns {
		fn(id)
	}
}

// nodeActive tells whether id is a member of the mesh right now: registered
// and neither removed nor expired. It is a map lookup, cheap enough to call
// for every use of a credential (e.g. a TURN allocation).
func (s *Server) nodeActive(id uint64) bool { return s.hub.Active(id) }

// onNodeGone registers fn to be called (without locks held) with the ID of
// every node that is removed or expired, after its peers were told.
func (s *Server) onNodeGone(fn func(id uint64)) {
	s.life.mu.Lock()
	defer s.life.mu.Unlock()
	s.life.gone = append(s.life.gone, fn)
}

// loadEphemeral starts the grace period of every ephemeral member: after a
// coordinator restart their agents need time to reconnect.
func (s *Server) loadEphemeral(ctx context.Context) error {
	ids, err := s.store.ephemeralMembers(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, id := range ids {
		s.life.ephemeral.registered(id, true, now)
	}
	return nil
}

// sweepLoop removes ephemeral nodes whose deadline passed, until ctx ends.
func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.life.ephemeral.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, id := range s.life.ephemeral.due(now) {
				rctx, cancel := context.WithTimeout(ctx, dbTimeout)
				_, err := s.removeNode(rctx, fmt.Sprint(id), reasonEphemeral)
				cancel()
				if errors.Is(err, ErrNodeNotFound) && s.replicas != nil {
					// Another replica removed it first.
					s.life.ephemeral.forget(id)
					continue
				}
				if err != nil {
					s.log.Warn("remove offline ephemeral node", "node", id, "err", err)
					s.life.ephemeral.forget(id)
				}
			}
		}
	}
}

// remoteSeen keeps the ephemeral deadlines of a node another replica
// changed: its stream may be there, so going online or offline there
// starts or stops the clock here as it would for a local stream.
func (s *Server) remoteSeen(n hub.RemoteSeen) {
	now := time.Now()
	switch {
	case !n.Ephemeral:
		s.life.ephemeral.registered(n.ID, false, now)
		return
	case !n.Known:
		s.life.ephemeral.registered(n.ID, true, now)
	}
	switch {
	case n.Online:
		s.life.ephemeral.connected(n.ID)
	case n.WasOnline:
		s.life.ephemeral.disconnected(n.ID, now)
	}
}

package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshvpn/meshvpn/coordinator/hub"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// Replicas are several coordinators on one PostgreSQL store, as peers:
// any agent may use any of them. What one changes reaches the others
// through the database, so nothing else has to run:
//   - the store announces each change it writes (NOTIFY, store_fanout.go):
//     registrations, removals, expiries, renames, policy, and online
//     flags. Every replica LISTENs and reloads what a notification names
//     into its hub, which sends its agents the delta as for a local change;
//   - a signal for a node whose stream another replica holds goes out as
//     a notification too, and the replica holding the stream queues it;
//   - each replica writes a heartbeat; the nodes a silent replica held
//     (one that was killed) are marked offline by the others.
//
// Netmap versions stay per replica: each starts a fresh epoch, so an agent
// that moves gets a full netmap, never a delta computed against another
// replica's history.

// Replica timing.
const (
	heartbeatInterval = 3 * time.Second
	// replicaDead is the heartbeat silence after which a replica's online
	// nodes are marked offline: its agents have moved by then, and a
	// replica restarting (loading 10,000 nodes on a busy machine) is back.
	replicaDead    = 30 * time.Second
	sweepEvery     = 5 * time.Second
	pruneEvery     = time.Minute
	listenRetry    = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// forwardQueueLen bounds the signals waiting to go out to other replicas;
// past it they are dropped (ICE retries), never blocking a stream.
const forwardQueueLen = 1024

// forwardBatch is how many queued signals one NOTIFY round trip carries.
const forwardBatch = 32

// replicaLink is this coordinator's tie to the other replicas.
type replicaLink struct {
	store *Store
	hub   *hub.Hub
	log   *slog.Logger
	// offered records another replica's peer relay offer (withdrawn:
	// addr not valid).
	offered func(node uint64, addr netip.AddrPort)
	// logLimit thins out lines about a database that keeps failing.
	logLimit *logsafe.Limiter
	out      chan string
	wg       sync.WaitGroup
}

// replicaIDFile holds a replica's name among those on its store, in its
// state directory: a restarted replica is the same one, and finds its
// netmap version (hub/netmapversion.go) and its nodes.
const replicaIDFile = "replica-id"

// loadReplicaID reads (or makes, on first start) the replica's ID.
func loadReplicaID(stateDir string) (string, error) {
	id, err := loadOrCreateSecret(filepath.Join(stateDir, replicaIDFile), newReplicaName)
	if err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	if id == "" || strings.ContainsAny(id, " \t\n") || len(id) > 64 {
		return "", fmt.Errorf("replica id in %s: want one word of at most 64 characters, delete it to make a new one", filepath.Join(stateDir, replicaIDFile))
	}
	return id, nil
}

// newReplicaName makes a replica's ID: 16 random hex digits.
func newReplicaName() (string, error) {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]), nil
}

// newReplicaLink ties the server to the other replicas; st.replica is
// already set (loadReplicaID).
func newReplicaLink(ctx context.Context, st *Store, h *hub.Hub, log *slog.Logger) (*replicaLink, error) {
	l := &replicaLink{store: st, hub: h, log: log.With("replica", st.replica),
		logLimit: logsafe.NewLimiter(logBurst, logInterval), out: make(chan string, forwardQueueLen)}
	if err := st.heartbeat(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// start runs the listener, the heartbeat and the signal sender until ctx
// ends; wait waits for them.
func (l *replicaLink) start(ctx context.Context) {
	l.wg.Go(func() { l.listen(ctx) })
	l.wg.Go(func() { l.beat(ctx) })
	l.wg.Go(func() { l.send(ctx) })
}

func (l *replicaLink) wait() { l.wg.Wait() }

// announceOffer tells the other replicas that node offers its peer relay
// at addr, or withdrew it (addr not valid): an offer lives in each
// replica's memory and is renewed every peerRelayEvery.
func (l *replicaLink) announceOffer(node uint64, addr netip.AddrPort) {
	a := "-"
	if addr.IsValid() {
		a = addr.String()
	}
	select {
	case l.out <- noteOffer + " " + l.store.replica + " " + strconv.FormatUint(node, 10) + " " + a:
	default: // renewed within peerRelayEvery
	}
}

// forward queues a signal frame for node to, online on another replica.
func (l *replicaLink) forward(from, to uint64, frame []byte) bool {
	p := noteSignal + " " + l.store.replica + " " + strconv.FormatUint(from, 10) + " " + strconv.FormatUint(to, 10) + " " + string(frame)
	if len(p) > maxNotifyPayload {
		return false // cannot happen under control.MaxSignalFrame
	}
	select {
	case l.out <- p:
		return true
	default:
		return false
	}
}

// send writes queued signals, several per round trip.
func (l *replicaLink) send(ctx context.Context) {
	batch := make([]string, 0, forwardBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-l.out:
			batch = append(batch[:0], p)
		}
	more:
		for len(batch) < forwardBatch {
			select {
			case p := <-l.out:
				batch = append(batch, p)
			default:
				break more
			}
		}
		var q strings.Builder
		args := make([]any, 0, 2*len(batch))
		q.WriteString("SELECT ")
		for i, p := range batch {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("pg_notify(?, ?)")
			args = append(args, notifyChannel, p)
		}
		wctx, cancel := context.WithTimeout(ctx, dbTimeout)
		_, err := l.store.db.ExecContext(wctx, q.String(), args...)
		cancel()
		if err != nil && ctx.Err() == nil {
			l.logLimit.Log(l.log, slog.LevelWarn, "forward signals to replicas", "signals", len(batch), "err", logsafe.Clip(err.Error()))
		}
	}
}

// beat writes the heartbeat, marks offline the nodes of dead replicas and
// prunes used challenges.
func (l *replicaLink) beat(ctx context.Context) {
	hb := time.NewTicker(heartbeatInterval)
	defer hb.Stop()
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	for {
		var err error
		wctx, cancel := context.WithTimeout(ctx, dbTimeout)
		select {
		case <-ctx.Done():
			cancel()
			return
		case <-hb.C:
			err = l.store.heartbeat(wctx)
		case <-sweep.C:
			var ids []uint64
			if ids, err = l.store.sweepDeadReplicas(wctx, replicaDead); err == nil && len(ids) > 0 {
				l.log.Info("nodes of a replica that stopped marked offline", "nodes", len(ids))
				err = l.hub.Reload(wctx, ids)
			}
		case <-prune.C:
			err = l.store.pruneChallenges(wctx)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			l.logLimit.Log(l.log, slog.LevelWarn, "replica upkeep", "err", logsafe.Clip(err.Error()))
		}
	}
}

// listen holds a LISTEN connection, reconnecting with backoff, until ctx
// ends. After each (re)connect it reloads everything, since notifications
// sent while it was away are lost.
func (l *replicaLink) listen(ctx context.Context) {
	wait := listenRetry
	for ctx.Err() == nil {
		start := time.Now()
		err := l.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		l.logLimit.Log(l.log, slog.LevelWarn, "replica notifications lost, reconnecting", "err", logsafe.Clip(err.Error()))
		if time.Since(start) > time.Minute {
			wait = listenRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, listenRetryMax)
	}
}

func (l *replicaLink) listenOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, dbTimeout)
	conn, err := pgx.ConnectConfig(cctx, l.store.listen.Copy())
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+notifyChannel)
	}
	cancel()
	if err != nil {
		if conn != nil {
			conn.Close(context.Background())
		}
		return err
	}
	defer conn.Close(context.Background())
	rctx, cancel := context.WithTimeout(ctx, dbTimeout)
	err = errors.Join(l.hub.ReloadAll(rctx), l.hub.ReloadPolicy(rctx))
	cancel()
	if err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.handle(ctx, n.Payload)
	}
}

// handle acts on one notification. Its own are skipped: this hub made
// those changes already.
func (l *replicaLink) handle(ctx context.Context, payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	from, rest, _ := strings.Cut(rest, " ")
	if from == l.store.replica {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	var err error
	switch kind {
	case noteNodes:
		var ids []uint64
		for f := range strings.SplitSeq(rest, ",") {
			if id, perr := strconv.ParseUint(f, 10, 64); perr == nil {
				ids = append(ids, id)
			}
		}
		err = l.hub.Reload(wctx, ids)
	case noteAll:
		err = l.hub.ReloadAll(wctx)
	case notePolicy:
		err = l.hub.ReloadPolicy(wctx)
	case noteOffer:
		sNode, sAddr, _ := strings.Cut(rest, " ")
		id, perr := strconv.ParseUint(sNode, 10, 64)
		addr, aerr := netip.ParseAddrPort(sAddr)
		if perr == nil && l.offered != nil && (aerr == nil || sAddr == "-") {
			l.offered(id, addr)
		}
	case noteSignal:
		sFrom, rest, _ := strings.Cut(rest, " ")
		sTo, frame, _ := strings.Cut(rest, " ")
		a, err1 := strconv.ParseUint(sFrom, 10, 64)
		b, err2 := strconv.ParseUint(sTo, 10, 64)
		if err1 == nil && err2 == nil {
			l.hub.Deliver(a, b, []byte(frame))
		}
	}
	if err != nil && ctx.Err() == nil {
		l.logLimit.Log(l.log, slog.LevelWarn, "apply change from another replica", "kind", logsafe.Clip(kind), "err", logsafe.Clip(err.Error()))
	}
}

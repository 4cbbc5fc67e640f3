// Package hub is the coordinator's live mesh: it keeps the connected
// agents' streams, computes their netmaps and fans out deltas, coalescing
// changes into batches, versions the netmap so reconnecting agents get
// only what changed (resumes), cuts both by the access policy, and routes
// ICE signals between peers within each sender's budget.
//
// The server drives it through a small API:
//   - New(ctx, Config) loads the members and the policy from a Store and
//     starts the flusher; Shutdown writes the last batch and stops it;
//   - Attach and Detach connect and disconnect a Stream (NewStream): the
//     transport writes the stream's first frame (Stream.Netmap), then what
//     it queues (Stream.Queue, each frame acknowledged with Written);
//   - Upsert, UpdateMember and Remove report membership changes; Touch a
//     live stream; SetPolicy a new access policy;
//   - Signal routes a decoded signal (DecodeSignal, SignalBudget);
//   - with replicas, Reload, ReloadAll, ReloadPolicy and Deliver take in
//     what other coordinators changed or forwarded;
//   - Active, Node, Nodes, PolicyPeers, Counts and NetmapVersion read.
//
// What it needs of the database is the Store interface (and ReplicaStore
// with replicas). The hub is the only writer of online states while it
// runs; it never calls the store with its lock held.
//
// Files: hub.go (Hub, Attach, Signal), stream.go, members.go, flush.go
// (batches), netmap.go (netmap encoding), netmapversion.go and
// replica_resume.go (versions and resumes), policy.go (access policy),
// remote.go (replicas), frame.go and signallimit.go (agents' signals),
// store.go, metrics.go.
package hub

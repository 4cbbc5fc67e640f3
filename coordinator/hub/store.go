package hub

import (
	"context"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// Store is what the hub needs of the database. The hub calls it without
// its lock held: when it starts (New), from the flusher (one goroutine, so
// writes keep their order) and from the calls that reload.
type Store interface {
	// ListNodes returns every member of the mesh.
	ListNodes(ctx context.Context) ([]control.Node, error)
	// Policy returns the stored access policy's source, nil if none.
	Policy(ctx context.Context) ([]byte, error)
	// SaveSeen writes a batch of online states and last-seen times in one
	// transaction, with version, if not nil: the version of the batch
	// about to be sent, whose online flags these are. With replicas it
	// returns the nodes whose going offline was not written because
	// another replica took them since; the hub reloads those.
	SaveSeen(ctx context.Context, seen map[uint64]Seen, version *Version) (stale []uint64, err error)
	// NetmapVersion reads the version stored with the last batch (this
	// replica's, with replicas); ok is false when there is none.
	NetmapVersion(ctx context.Context) (v Version, ok bool, err error)
	// LoadBatches reads the stored batches of epoch up to SEQ upTo, oldest
	// first. An epoch is one coordinator's (replica's) series: a replica
	// reads a dead one's batches by its epoch (replica_resume.go).
	LoadBatches(ctx context.Context, epoch string, upTo uint64) ([]Batch, error)
}

// ReplicaStore is what the hub needs of a store shared by replicas, on
// top of Store.
type ReplicaStore interface {
	// NodesByID reads the nodes ids, expired ones too; IDs not returned
	// were deleted. AllNodes reads every node.
	NodesByID(ctx context.Context, ids []uint64) ([]StoredNode, error)
	AllNodes(ctx context.Context) ([]StoredNode, error)
	// SeenFrom maps each online node to the address its stream comes from.
	SeenFrom(ctx context.Context) (map[uint64]string, error)
	// ChangedSince lists the nodes whose online state changed at or after
	// ms (database clock, Unix ms).
	ChangedSince(ctx context.Context, ms int64) ([]uint64, error)
	// Held lists the nodes online through this replica's streams.
	Held(ctx context.Context) ([]uint64, error)
	// VersionByEpoch reads the stored version of the replica whose epoch
	// is epoch, if one is stored.
	VersionByEpoch(ctx context.Context, epoch string) (Version, bool, error)
}

// Seen is the hub-owned part of a node the store is told about lazily.
type Seen struct {
	Online   bool
	LastSeen time.Time
	// Touch only moves last_seen; the online flag is left as stored.
	Touch bool
	// From is the stream's source address (Node.SeenFrom), kept in the
	// store for other replicas.
	From string
}

// Version is what the store keeps of the hub's netmap version (see
// netmapversion.go).
type Version struct {
	Epoch  string
	Seq    uint64
	Digest uint64
	// SavedAt is when a replica saved it (database clock, Unix ms).
	SavedAt int64
	// Batch is the nodes of the batch being saved; KeepFrom the oldest
	// SEQ the ring keeps with it (the store deletes older batches).
	Batch    []uint64
	KeepFrom uint64
}

// Batch is one sent delta batch: its SEQ and the nodes it named. The hub
// keeps its last ones in a ring for resumes, and the store keeps them too
// (netmapversion.go).
type Batch struct {
	Seq uint64
	IDs []uint64
}

// StoredNode is a node row as another replica left it.
type StoredNode struct {
	control.Node
	Expired, Ephemeral bool
}

// RemoteSeen is a node change taken from the store, for the server's
// ephemeral deadlines: every replica times every ephemeral node, online on
// whichever replica.
type RemoteSeen struct {
	ID                                  uint64
	Ephemeral, Known, Online, WasOnline bool
}

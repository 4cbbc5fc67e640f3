package coordinator

import (
	"context"

	"github.com/meshvpn/meshvpn/coordinator/hub"
)

// hubStore is the Store as the hub sees it (hub.Store, and with replicas
// hub.ReplicaStore): the store's own names, typed in the hub's terms.
type hubStore struct{ *Store }

var (
	_ hub.Store        = hubStore{}
	_ hub.ReplicaStore = hubStore{}
)

// netmapVersion is what the store keeps of the hub's netmap version
// (hub.Version).
type netmapVersion struct {
	epoch  string
	seq    uint64
	digest uint64
	// savedAt is when a replica saved it (database clock, Unix ms).
	savedAt int64
	// batch is the nodes of the batch being saved; keepFrom the oldest
	// SEQ the ring keeps with it (the store deletes older batches).
	batch    []uint64
	keepFrom uint64
}

func (v netmapVersion) hub() hub.Version {
	return hub.Version{Epoch: v.epoch, Seq: v.seq, Digest: v.digest, SavedAt: v.savedAt}
}

func (s hubStore) SaveSeen(ctx context.Context, seen map[uint64]hub.Seen, v *hub.Version) ([]uint64, error) {
	var nv *netmapVersion
	if v != nil {
		nv = &netmapVersion{epoch: v.Epoch, seq: v.Seq, digest: v.Digest, savedAt: v.SavedAt, batch: v.Batch, keepFrom: v.KeepFrom}
	}
	return s.saveSeen(ctx, seen, nv)
}

func (s hubStore) NetmapVersion(ctx context.Context) (hub.Version, bool, error) {
	v, ok, err := s.loadNetmapVersion(ctx)
	return v.hub(), ok, err
}

func (s hubStore) LoadBatches(ctx context.Context, epoch string, upTo uint64) ([]hub.Batch, error) {
	return s.loadBatches(ctx, epoch, upTo)
}

func (s hubStore) VersionByEpoch(ctx context.Context, epoch string) (hub.Version, bool, error) {
	v, ok, err := s.versionByEpoch(ctx, epoch)
	return v.hub(), ok, err
}

func (s hubStore) NodesByID(ctx context.Context, ids []uint64) ([]hub.StoredNode, error) {
	return s.nodesByID(ctx, ids)
}

func (s hubStore) AllNodes(ctx context.Context) ([]hub.StoredNode, error) { return s.allStored(ctx) }

func (s hubStore) SeenFrom(ctx context.Context) (map[uint64]string, error) { return s.seenFrom(ctx) }

func (s hubStore) ChangedSince(ctx context.Context, ms int64) ([]uint64, error) {
	return s.changedSince(ctx, ms)
}

func (s hubStore) Held(ctx context.Context) ([]uint64, error) { return s.heldBy(ctx, s.replica) }

package coordinator

import "github.com/meshvpn/meshvpn/coordinator/store"

// dbTx is a write transaction of the database layer (coordinator/store):
// queries with ?-placeholders on either engine.
type dbTx = store.Tx

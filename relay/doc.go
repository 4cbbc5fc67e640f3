// Package relay is the mesh's TURN relay: the coordinator's embedded relay
// and a node's peer relay (meshvpn up --relay-server) are the same server.
//
// Read it in this order:
//   - server.go: Config and Listen, pion/turn set up for the control side
//     (Allocate, Refresh, CreatePermission, ChannelBind, authentication);
//   - cred.go: credentials in the TURN REST scheme, and a peer relay's own
//     secret derived from the coordinator's;
//   - policy.go: whom a relay relays to (no private ranges, on its own host
//     only its own allocations, a peer relay only to the mesh's relays);
//   - alloc.go: the relay's table of allocations, the quota per node, the
//     lifetime cap, the relay sockets and the host guard on them;
//   - fast.go, batch.go: the batched data path for bound channels;
//   - watch.go, shared.go, srclimit.go: the client-facing socket (grants
//     read from pion's answers, reflection limits, a socket shared with a
//     STUN server);
//   - usage.go: bytes and packets relayed per node.
//
// The callers keep only the glue: the coordinator mints credentials and
// reports usage (coordinator/turn.go, peerrelay*.go), the agent offers its
// relay to the coordinator (agent/relayserver.go).
package relay

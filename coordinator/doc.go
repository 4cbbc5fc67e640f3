// Package coordinator is the meshvpn control server: it admits nodes with
// auth keys, hands out overlay addresses, streams the netmap to agents,
// relays their ICE signalling and answers STUN.
//
// Layout. The parts that stand alone are packages of their own:
//   - hub/: the live mesh: connected agents' streams, netmaps and deltas
//     (batched, versioned for resumes, cut by the access policy), and
//     signal routing with each sender's budget. The server drives it
//     through its API (Attach, Detach, Upsert, Remove, Signal, SetPolicy,
//     Reload...) and it reaches the database through the small hub.Store
//     interface (hubstore.go adapts Store); hub/hubtest has its fakes;
//   - store/: the database layer, one engine interface over SQLite (the
//     default) and PostgreSQL (replicas), each with versioned migrations;
//   - stunserver/: the STUN server, with the RFC 5780 addresses netcheck
//     needs and the primary socket shared with the embedded TURN server;
//   - admin/: the admin socket's protocol, binding and client;
//   - ../relay: the TURN relay, shared with agents' peer relays.
//
// This package keeps the server and what needs its state, by concern:
//   - server: server.go (Config, New, Listen, Serve, Close), lock.go,
//     identity.go, secretfile.go, secret_shared.go, turnsecret.go,
//     metrics.go;
//   - API: api.go, api_identity.go, challenge.go, register.go,
//     credential.go, authkey.go, hostname.go, tags.go, ipalloc.go,
//     overlay6.go, ratelimit.go, joinlimit.go, connlimit.go;
//   - agent streams: stream.go (the WebSocket side of a hub.Stream);
//   - store operations on top of store/: store.go, store_db.go, nodes.go,
//     store_seen.go, store_version.go, policy_store.go, authkey_admin.go,
//     lifecycle_store.go, hubstore.go;
//   - membership: policy.go (checking and setting the access policy),
//     lifecycle.go, ephemeral.go;
//   - replicas: replica.go, store_fanout.go;
//   - relays and STUN as agents see them: turn.go, relays.go, peerrelay*.go,
//     usage.go, netcheck.go, stun6.go;
//   - admin: admin.go (the socket's handlers), admin_client.go (Admin: the
//     admin commands, through the socket or, with no server, the store),
//     policy_admin.go.
//
// The hub's lock is its own: the server calls its methods without holding
// anything of the hub's, and the hub calls back into the server (a node
// another replica removed, a signal for another replica) only through the
// functions in hub.Config.
package coordinator

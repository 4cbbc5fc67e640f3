// Package coordinator is the meshvpn control server: it admits nodes with
// auth keys, hands out overlay addresses, streams the netmap to agents,
// relays their ICE signalling and answers STUN.
//
// Layout. The parts that stand alone are packages of their own:
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
//   - store operations on top of store/: store.go, store_db.go, nodes.go,
//     store_seen.go, store_version.go, policy_store.go, authkey_admin.go,
//     lifecycle_store.go;
//   - hub (the live mesh): hub*.go, stream.go, frame.go, signallimit.go,
//     netmap.go, netmapversion.go, policy.go, lifecycle.go, ephemeral.go;
//   - replicas: replica.go, replica_resume.go, store_fanout.go,
//     hub_remote.go;
//   - relays and STUN as agents see them: turn.go, relays.go, peerrelay*.go,
//     usage.go, netcheck.go, stun6.go;
//   - admin: admin.go (the socket's handlers), admin_client.go (Admin: the
//     admin commands, through the socket or, with no server, the store),
//     policy_admin.go.
//
// Why the hub is not a package of its own: it is the server's in-memory
// mesh, and most of the server works on it under its lock (registration,
// removal, policy, peer relays, replicas' reloads, usage names). Its state
// is loaded from and saved to the store's node rows, its netmap is cut by
// the policy and carries the relay lists, and the replicas' fan-out writes
// into it. A package boundary there would export most of the hub and an
// interface over most of Store for one caller, without a second user to
// justify it; the file names (hub*.go, netmap*.go, stream.go) mark it.
package coordinator

// Package datapath is the agent's data path: where WireGuard's packets
// leave and arrive. The agent decides which path a peer uses (its ICE
// sessions, birthday punches and relay choice); this package carries the
// packets on the path it was given, and knows nothing of peers.
//
// # One socket, shared
//
// Bind (bind.go) is the conn.Bind the agent gives wireguard-go. It wraps
// wireguard-go's own StdNetBind, so the direct path costs what stock
// wireguard-go costs: one UDP port with an IPv4 and an IPv6 socket,
// recvmmsg/sendmmsg, UDP GSO/GRO. ICE's checks run on that same port, so
// the NAT mapping they open is the one WireGuard then uses.
//
// # A packet going out
//
// WireGuard calls Bind.Send with a batch for one endpoint. The endpoint
// decides the way:
//   - a *conn.StdNetEndpoint (the direct path ICE selected, or a birthday
//     punch's easy side) goes out of the shared socket: IPv4 through
//     StdNetBind, IPv6 through send6 (bind6.go), which works around a
//     destination mix-up in the StdNetBind we pin;
//   - an *Endpoint (relay.go) goes through a writer of its own, routed by
//     the peer's address with Bind.Route: a channel on the shared TURN
//     allocation (relayout.go: ChannelData, the whole batch in one
//     sendmmsg, runs of equal-sized messages as one UDP GSO buffer; over
//     a TCP or TLS relay, one write), a
//     per-peer pion/ice relay session's connection, or the socket a
//     birthday punch won. The agent puts such an address into
//     WireGuard over UAPI, and Bind.ParseEndpoint turns it into its route,
//     so wireguard-go never knows.
//
// Besides WireGuard, the agent sends from the shared socket with
// Bind.SendTo (STUN, punch probes) and Bind.SendOpening (low-TTL opening
// packets, lowttl.go, on a duplicate of the IPv4 socket).
//
// # A packet coming in
//
// WireGuard polls one ReceiveFunc per socket and one more for routes:
//   - what arrives on the shared socket is sorted in WireGuard's batch
//     (Bind.filter): WireGuard messages stay (classify.go tells them by
//     their first four bytes, first, as the hot path); the rest are taken
//     out of the batch and offered to the agent's Divert hook (its mapping
//     queries, birthday replies, synchronized-open packets); STUN the hook
//     leaves goes to ICE through STUNConn (stunconn.go), the net.PacketConn
//     pion's UDP mux reads; anything else is dropped;
//   - what arrives through a route comes out of the routes' ReceiveFunc
//     (relayin.go), up to WireGuard's batch per call: a relay channel's
//     messages are read by recvmmsg (with UDP GRO, many to a buffer) on
//     the relay client's own socket (or from its stream) straight into a
//     batch, demultiplexed
//     by channel number and queued whole (relayread.go); a relay session
//     and a birthday socket hand single messages over with Bind.Deliver.
//
// A peer that has just left the relay for a direct path still has packets
// in flight through the relay; RoamHold (roam.go) attributes them to the
// new path for a few seconds, so WireGuard does not roam back.
//
// # Birthday sockets
//
// PunchSocket (punchsock.go) is one of the many sockets the hard side of
// a birthday punch opens, each sending one opening packet at a low TTL;
// the one a probe reaches becomes the peer's path: Bind.RoutePunched
// routes WireGuard's packets through it, PunchSocket.Serve hands what the
// peer sends to WireGuard. The agent's birthday*.go decides the rest.
//
// # The shared relay client
//
// RelayClient (relayclient.go) is one TURN allocation per agent on one
// relay server: Allocate, Refresh and ChannelBind with long-term
// credentials, a channel per relayed peer. It reaches the relay over its
// own UDP socket, or over one TCP or TLS stream (relaystream.go: the same
// messages framed by their headers, ChannelData padded, read into fixed
// buffers) where UDP is blocked. The agent's relayshared.go
// exchanges relayed addresses with the peers and decides when a channel
// is the peer's path.
package datapath

package agent

import (
	"log/slog"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// TestPeerKeyRefused: a peer whose key is an alias spelling of a key, or
// our own key, is not added.
func TestPeerKeyRefused(t *testing.T) {
	priv, _ := newPrivateKey()
	a := &Agent{log: slog.New(slog.DiscardHandler), priv: priv, pub: priv.Public(), peers: map[uint64]*peer{}}
	a.self = control.Node{ID: 1, PublicKey: a.pub.String()}
	other, _ := newPrivateKey()
	alias := []byte(other.Public().String())
	alias[42]++ // a spare bit: same key to a lenient decoder
	for _, k := range []string{string(alias), a.pub.String()} {
		a.upsertPeer(control.Node{ID: 2, Name: "p", IP: "100.64.0.2", PublicKey: k})
		if len(a.peers) != 0 {
			t.Fatalf("peer with key %s added", k)
		}
	}
}

// TestPeerResolverAddrRefused: a peer claiming the resolver's address
// (a coordinator never gives it out) is not added: it would shadow every
// node's DNS.
func TestPeerResolverAddrRefused(t *testing.T) {
	priv, _ := newPrivateKey()
	a := &Agent{log: slog.New(slog.DiscardHandler), priv: priv, pub: priv.Public(), peers: map[uint64]*peer{}}
	a.self = control.Node{ID: 1, PublicKey: a.pub.String()}
	other, _ := newPrivateKey()
	a.upsertPeer(control.Node{ID: 2, Name: "p", IP: control.ResolverAddr.String(), PublicKey: other.Public().String()})
	if len(a.peers) != 0 {
		t.Fatal("peer with the resolver's address added")
	}
}

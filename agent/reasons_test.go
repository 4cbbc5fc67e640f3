package agent

import (
	"testing"

	"github.com/pion/ice/v4"
)

func TestReasons(t *testing.T) {
	failed := laneState{session: true, answered: true, state: ice.ConnectionStateFailed, failures: 1}
	cases := []struct {
		in   reasonInput
		want string
	}{
		{reasonInput{online: true, direct: failed, pathEnv: pathEnv{localNAT: natUDPBlocked}}, "UDP blocked locally"},
		{reasonInput{online: true, direct: failed, peerNAT: natUDPBlocked}, "UDP blocked at the peer"},
		{reasonInput{online: true, direct: failed, peerNAT: natSymmetric, pathEnv: pathEnv{localNAT: natSymmetric}}, "both behind symmetric NAT, no port mapping"},
		{reasonInput{online: true, direct: failed, peerNAT: natSymmetric}, "peer behind symmetric NAT, no port mapping"},
		{reasonInput{online: true, direct: failed, peerNAT: natSymmetric, pathEnv: pathEnv{localNAT: natPortMapped}}, "peer behind symmetric NAT, no port mapping"},
		{reasonInput{online: true, direct: failed, pathEnv: pathEnv{localNAT: natSymmetric}}, "behind symmetric NAT here, no port mapping"},
		{reasonInput{online: true, direct: failed}, "no direct candidate pair worked"},
	}
	for _, c := range cases {
		if got := c.in.notDirect(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.in, got, c.want)
		}
	}
	if got := (reasonInput{online: false}).none(); got != "peer offline" {
		t.Errorf("offline: %q", got)
	}
	if got := (reasonInput{online: true, direct: failed, pathEnv: pathEnv{coordDown: true}}).none(); got != "coordinator unreachable, no new session can be negotiated" {
		t.Errorf("coordinator down: %q", got)
	}
	got := (reasonInput{online: true, direct: failed, peerNAT: natSymmetric, pathEnv: pathEnv{relayErr: "credentials refused (401)"}}).none()
	if got != "peer behind symmetric NAT, no port mapping; relay unavailable: credentials refused (401)" {
		t.Errorf("no path, relay refused: %q", got)
	}
}

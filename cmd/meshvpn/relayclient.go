package main

import (
	"os"

	"github.com/meshvpn/meshvpn/agent"
)

// relayClientDefault is --relay-client's default: MESHVPN_RELAY_CLIENT
// when set (e2e runs every relay test in either mode with it), else
// shared.
func relayClientDefault() string {
	if v := os.Getenv("MESHVPN_RELAY_CLIENT"); v != "" {
		return v
	}
	return agent.RelayClientShared
}

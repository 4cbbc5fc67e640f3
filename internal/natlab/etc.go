package natlab

import (
	"fmt"
	"os"
	"path/filepath"
)

// etcNetns is where `ip netns exec NS` finds files to bind-mount over the
// same names in /etc (resolv.conf, hosts) for the command it runs.
const etcNetns = "/etc/netns"

func etcDir(ns string) string { return filepath.Join(etcNetns, ns) }

// defaultResolvConf is every lab host's resolv.conf: no resolver. The file
// must exist for each namespace: without it, a command run in the lab
// (an agent rewriting resolv.conf) would see, and change, the machine's
// own /etc/resolv.conf.
const defaultResolvConf = "# natlab: no DNS server in this lab host unless a test adds one\n"

// writeEtc gives ns its own resolv.conf.
func writeEtc(ns string) error {
	if err := os.MkdirAll(etcDir(ns), 0o755); err != nil {
		return fmt.Errorf("natlab: %w", err)
	}
	if err := os.WriteFile(filepath.Join(etcDir(ns), "resolv.conf"), []byte(defaultResolvConf), 0o644); err != nil {
		return fmt.Errorf("natlab: %w", err)
	}
	return nil
}

func removeEtc(ns string) {
	if labPrefix.MatchString(ns) {
		os.RemoveAll(etcDir(ns))
	}
}

// ResolvConf is the file the host's commands see as /etc/resolv.conf.
func (h *Host) ResolvConf() string { return filepath.Join(etcDir(h.NS), "resolv.conf") }

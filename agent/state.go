package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshvpn/meshvpn/internal/statedir"
)

// The agent's state dir holds its WireGuard private key and its node
// credential, both secrets: files are 0600 and the directory 0700.
const (
	privateKeyFile = "private.key"
	nodeFile       = "node.json"
)

// nodeState is what the agent remembers of its registration.
type nodeState struct {
	Coordinator string `json:"coordinator"`
	NodeID      uint64 `json:"node_id"`
	Name        string `json:"name"`
	IP          string `json:"ip"`
	Prefix      string `json:"prefix"`
	IP6         string `json:"ip6,omitempty"`
	Prefix6     string `json:"prefix6,omitempty"`
	Credential  string `json:"credential"`
}

// ensureStateDir creates the state dir, or tightens an existing one to
// 0700: it may have been made by hand with the umask's 0755.
func ensureStateDir(dir string, log *slog.Logger) error {
	was, err := statedir.Ensure(dir)
	if err != nil {
		return err
	}
	if was != 0 {
		log.Warn("state dir was readable by others; tightened to 0700", "dir", dir, "was", was.String())
	}
	return nil
}

// loadOrCreateKey reads the private key, creating it on first start.
func loadOrCreateKey(dir string) (Key, error) {
	path := filepath.Join(dir, privateKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := parseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return k, fmt.Errorf("read %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Key{}, fmt.Errorf("read private key: %w", err)
	}
	k, err := newPrivateKey()
	if err != nil {
		return k, err
	}
	if err := writeSecret(path, []byte(k.String()+"\n")); err != nil {
		return k, fmt.Errorf("save private key: %w", err)
	}
	return k, nil
}

func loadNodeState(dir string) (*nodeState, error) {
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node state: %w", err)
	}
	var st nodeState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, nodeFile), err)
	}
	return &st, nil
}

func saveNodeState(dir string, st *nodeState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(dir, nodeFile), append(b, '\n')); err != nil {
		return fmt.Errorf("save node state: %w", err)
	}
	return nil
}

// writeSecret replaces path atomically with a 0600 file, so a crash never
// leaves a half-written key behind.
func writeSecret(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

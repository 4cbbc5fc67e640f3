package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
)

// newTURNSecret makes an embedded TURN server secret: 32 random bytes, hex.
func newTURNSecret() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("make turn secret: %w", err)
	}
	return hex.EncodeToString(raw[:]), nil
}

// turnSecretFile is the embedded TURN server's shared secret in the state dir.
const turnSecretFile = "turn-secret"

// loadTURNSecret reads the embedded server's secret, creating it (mode 0600)
// on first use, so credentials handed out survive a coordinator restart.
func loadTURNSecret(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, turnSecretFile)
	s, err := loadOrCreateSecret(path, newTURNSecret)
	if err != nil {
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	if len(s) < 32 {
		return nil, fmt.Errorf("turn secret %s: too short, delete it to make a new one", path)
	}
	return []byte(s), nil
}

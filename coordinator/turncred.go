package coordinator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TURN credentials follow the "TURN REST API" scheme that coturn's
// use-auth-secret and hosted TURN services understand: the username is
// "<unix expiry>:<node id>" and the password is base64(HMAC-SHA1(secret,
// username)). The server needs no per-user state, the secret never leaves
// the coordinator, and a leaked credential dies on its own.

// mintTURNCredential returns a credential for node valid until expires.
func mintTURNCredential(secret []byte, node uint64, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + strconv.FormatUint(node, 10)
	return username, turnPassword(secret, username)
}

func turnPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

var errTURNExpired = errors.New("credential expired")

// parseTURNUsername checks a username minted by mintTURNCredential against
// now and returns the node it was minted for.
func parseTURNUsername(username string, now time.Time) (node uint64, err error) {
	ts, id, ok := strings.Cut(username, ":")
	if !ok {
		return 0, errors.New("username is not expiry:node")
	}
	exp, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, errors.New("username expiry is not a unix time")
	}
	node, err = strconv.ParseUint(id, 10, 64)
	if err != nil || node == 0 {
		return 0, errors.New("username node is not a node id")
	}
	if now.Unix() >= exp {
		return 0, errTURNExpired
	}
	return node, nil
}

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

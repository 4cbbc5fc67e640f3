package coordinator

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadCredential is returned for any credential that does not authenticate
// a node. One error for all cases, so a caller learns nothing about which
// node IDs exist.
var ErrBadCredential = errors.New("invalid credential")

// newCredential makes a node credential, "<nodeID>.<32 random bytes,
// base64url>". The ID prefix lets us find the node without an index on the
// secret; the hash comparison then decides.
func newCredential(nodeID uint64) (string, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", fmt.Errorf("new credential: %w", err)
	}
	return strconv.FormatUint(nodeID, 10) + "." + base64.RawURLEncoding.EncodeToString(secret[:]), nil
}

// credentialNodeID extracts the node ID of a well-formed credential.
func credentialNodeID(cred string) (uint64, error) {
	idPart, secret, ok := strings.Cut(cred, ".")
	if !ok || secret == "" || len(cred) > 128 {
		return 0, ErrBadCredential
	}
	// Node IDs are SQLite rowids, positive int64s; a larger number would
	// fail in the driver rather than simply match nothing.
	id, err := strconv.ParseUint(idPart, 10, 63)
	if err != nil || id == 0 {
		return 0, ErrBadCredential
	}
	return id, nil
}

// credentialMatches compares in constant time, so response timing does not
// leak how much of a guessed hash is right.
func credentialMatches(cred string, storedHash []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(cred), storedHash) == 1
}

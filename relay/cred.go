package relay

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// TURN credentials follow the "TURN REST API" scheme that coturn's
// use-auth-secret and hosted TURN services understand: the username is
// "<unix expiry>:<node id>" and the password is base64(HMAC-SHA1(secret,
// username)). The server needs no per-user state, the secret never leaves
// the coordinator, and a leaked credential dies on its own.

// MintCredential returns a credential for node valid until expires.
func MintCredential(secret []byte, node uint64, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + strconv.FormatUint(node, 10)
	return username, Password(secret, username)
}

func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

var ErrExpired = errors.New("credential expired")

// ParseUsername checks a username minted by MintCredential against
// now and returns the node it was minted for.
func ParseUsername(username string, now time.Time) (node uint64, err error) {
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
		return 0, ErrExpired
	}
	return node, nil
}

// PeerSecret is the secret of the peer relay run by node, derived from the
// coordinator's TURN secret: the coordinator needs no state per relay, and
// a relay node that knows its own secret can neither mint credentials for
// another relay nor learn the coordinator's secret (HMAC is one-way).
func PeerSecret(master []byte, node uint64) []byte {
	mac := hmac.New(sha256.New, master)
	mac.Write([]byte("meshvpn peer relay v1\x00"))
	mac.Write([]byte(strconv.FormatUint(node, 10)))
	return []byte(hex.EncodeToString(mac.Sum(nil)))
}

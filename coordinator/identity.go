package coordinator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"golang.org/x/crypto/curve25519"

	"github.com/meshvpn/meshvpn/control"
)

// identityKeyFile holds the coordinator's static X25519 private key
// (base64, mode 0600) in the state dir. Nodes prove possession of their
// WireGuard keys against it (see control.RegisterProof). Losing it is
// harmless: nodes fetch the public key with every challenge.
const identityKeyFile = "coordinator.key"

// Registration refusals about the node's key. Their texts reach the agent.
var (
	// ErrDegenerateKey is a public key whose Diffie-Hellman results are all
	// zeros (zero or a low-order point): no one holds its private key.
	ErrDegenerateKey = errors.New("public key is a low-order point")
	// ErrBadProof is a proof of possession that does not verify.
	ErrBadProof = errors.New("invalid proof of key possession")
)

// identity is the coordinator's static X25519 key pair.
type identity struct {
	priv [32]byte
	// pub is the public key, base64, as nodes see it.
	pub string
}

// loadIdentity reads the coordinator's key from stateDir, creating it on
// first start.
func loadIdentity(stateDir string) (*identity, error) {
	path := filepath.Join(stateDir, identityKeyFile)
	s, err := loadOrCreateSecret(path, newIdentityKey)
	if err != nil {
		return nil, fmt.Errorf("coordinator key: %w", err)
	}
	return parseIdentity(path, s)
}

// newIdentityKey makes a coordinator key, base64 as it is kept.
func newIdentityKey() (string, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", fmt.Errorf("make coordinator key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k[:]), nil
}

// parseIdentity makes the key pair from the kept key s; where names where
// it is kept.
func parseIdentity(where, s string) (*identity, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("coordinator key %s: not 32 bytes of base64, delete it to make a new one", where)
	}
	id := &identity{}
	copy(id.priv[:], b)
	pub, err := curve25519.X25519(id.priv[:], curve25519.Basepoint)
	if err != nil {
		return nil, fmt.Errorf("coordinator key: %w", err)
	}
	id.pub = base64.StdEncoding.EncodeToString(pub)
	return id, nil
}

// shared is the Diffie-Hellman secret with a node's public key (base64, as
// control.ValidatePublicKey accepts it). It fails with ErrDegenerateKey for
// the zero key and every low-order point: the clamped scalar kills any
// small-order component, so the result is zero exactly for those.
func (id *identity) shared(nodeKey string) ([]byte, error) {
	pub, err := base64.StdEncoding.DecodeString(nodeKey)
	if err != nil || len(pub) != 32 {
		return nil, errors.New("public_key: want 32 bytes of base64")
	}
	s, err := curve25519.X25519(id.priv[:], pub)
	if err != nil {
		return nil, ErrDegenerateKey
	}
	return s, nil
}

// checkKey refuses degenerate public keys and, when req carries a proof,
// verifies it. proven is true only for a valid proof; the caller still has
// to check (and use up) the challenge.
func (id *identity) checkKey(req *control.RegisterRequest) (proven bool, err error) {
	shared, err := id.shared(req.PublicKey)
	if err != nil {
		return false, err
	}
	if req.Proof == "" {
		return false, nil
	}
	if !control.VerifyRegisterProof(shared, id.pub, req) {
		return false, ErrBadProof
	}
	return true, nil
}

// maxSuspectLog bounds the startup warnings about suspect keys.
const maxSuspectLog = 20

// warnSuspectKeys logs the members whose public keys this build would
// refuse: a non-canonical spelling (perhaps an alias of another node's key,
// registered before keys had to be canonical) or a low-order point. They
// stay; the operator decides (`nodes remove`).
func warnSuspectKeys(nodes []control.Node, log *slog.Logger) {
	n := 0
	for _, r := range nodes {
		// A table lookup, not a key agreement per node: a large store
		// must not slow the start.
		err := control.ValidatePublicKey(r.PublicKey)
		if err == nil && isLowOrder(r.PublicKey) {
			err = ErrDegenerateKey
		}
		if err == nil {
			continue
		}
		if n++; n <= maxSuspectLog {
			log.Warn("stored node has a public key new registrations would refuse; remove it unless you know it",
				"node", r.ID, "name", r.Name, "ip", r.IP, "reason", err.Error())
		}
	}
	if n > maxSuspectLog {
		log.Warn("more stored nodes have refused public keys", "total", n, "logged", maxSuspectLog)
	}
}

// lowOrder are the Curve25519 u-coordinates of order 1, 2, 4 and 8, with
// their non-canonical forms below 2^255 (little-endian, hex): 0, 1, the two
// points of order 8, p-1, p and p+1. X25519 ignores the top bit.
var lowOrder = func() map[[32]byte]bool {
	m := map[[32]byte]bool{}
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		var k [32]byte
		hex.Decode(k[:], []byte(h))
		m[k] = true
	}
	return m
}()

// isLowOrder tells whether the base64 key is a low-order point, without a
// key agreement. Registration relies on the key agreement's own check; this
// serves where that would cost too much.
func isLowOrder(pub string) bool {
	b, err := base64.StdEncoding.DecodeString(pub)
	if err != nil || len(b) != 32 {
		return false
	}
	var k [32]byte
	copy(k[:], b)
	k[31] &= 0x7f
	return lowOrder[k]
}

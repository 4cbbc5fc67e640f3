package control

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
)

// Proof of possession. A node registering with an auth key proves that it
// holds the private key of the public key it names: the coordinator has a
// static X25519 key, and the node MACs its request with a key derived from
// the Diffie-Hellman secret of its private key and the coordinator's public
// key. Only the holder of the node's private key (or the coordinator) can
// compute that secret. A coordinator re-admits a public key it knows only
// with a valid proof, so a member who saw a peer's public key in its netmap
// cannot take that peer's identity.
//
// Replay: the MAC covers a challenge the coordinator issued (short-lived,
// accepted once) and the coordinator's public key, so a captured request is
// refused later and by any other coordinator.

// PathChallenge serves GET: a fresh Challenge, no credential needed.
const PathChallenge = "/api/v1/challenge"

// Challenge is what a node needs to prove possession of its key.
type Challenge struct {
	// CoordinatorKey is the coordinator's static X25519 public key, base64.
	CoordinatorKey string `json:"coordinator_key"`
	// Challenge is opaque to the node; it goes into RegisterRequest as is.
	Challenge string `json:"challenge"`
	// ExpiresIn is how many seconds the challenge is accepted for.
	ExpiresIn int `json:"expires_in"`
}

// proofLabel separates this use of the shared secret from any other.
const proofLabel = "meshvpn register proof v1"

// RegisterProof is the proof for req (all of its fields but Proof) made
// with shared, the X25519 secret of the node's private key and the
// coordinator's public key coordKey (base64). It is base64, 44 characters.
func RegisterProof(shared []byte, coordKey string, req *RegisterRequest) string {
	kdf := hmac.New(sha256.New, shared)
	kdf.Write([]byte(proofLabel))
	mac := hmac.New(sha256.New, kdf.Sum(nil))
	// Length-prefixed fields: no two different requests give one message.
	for _, f := range []string{proofLabel, coordKey, req.Challenge, req.PublicKey, req.AuthKey, req.Credential, req.Hostname} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		mac.Write(n[:])
		mac.Write([]byte(f))
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// VerifyRegisterProof tells in constant time whether req.Proof is the
// proof RegisterProof makes.
func VerifyRegisterProof(shared []byte, coordKey string, req *RegisterRequest) bool {
	want := RegisterProof(shared, coordKey, req)
	return hmac.Equal([]byte(want), []byte(req.Proof))
}

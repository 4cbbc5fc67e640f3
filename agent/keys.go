package agent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard (Curve25519) key.
type Key [32]byte

func newPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate private key: %w", err)
	}
	k[0] &= 248
	k[31] = k[31]&127 | 64
	return k, nil
}

// Public derives the public key of a private key.
func (k Key) Public() Key {
	var pub Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order point fails, and the base point is not one.
		panic(err)
	}
	copy(pub[:], out)
	return pub
}

func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex is the form wireguard-go's configuration protocol wants.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

func parseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("invalid key: want 32 bytes of base64")
	}
	copy(k[:], b)
	return k, nil
}

// parseHexKey reads a key in the form wireguard-go reports it.
func parseHexKey(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("invalid key: want 32 bytes of hex")
	}
	copy(k[:], b)
	return k, nil
}

// shared is the Diffie-Hellman secret of private key k and pub; it fails
// for a low-order pub (an all-zero result).
func (k Key) shared(pub Key) ([]byte, error) {
	s, err := curve25519.X25519(k[:], pub[:])
	if err != nil {
		return nil, fmt.Errorf("key agreement: %w", err)
	}
	return s, nil
}

package coordinator

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Challenges bind a proof of possession to one moment and one use, so a
// captured registration cannot be replayed. They are stateless until used:
// expiry and nonce, MACed with a secret of this process (a restart makes
// outstanding ones stale; the agent fetches another). A used one is
// remembered until it expires.
//
// Replicas share the secret (the store's secrets table) and record used
// nonces in the store too (claim), so a challenge issued by one verifies
// on any other, once.

// challengeTTL is how long a challenge is accepted.
const challengeTTL = time.Minute

// maxUsedChallenges bounds the memory of used challenges. Every entry needs
// a request that passed the proof check; the failed-auth limiter charges
// those whose auth key fails.
const maxUsedChallenges = 1 << 16

var (
	// ErrChallengeStale is a challenge that expired, was used already, or
	// was not issued by this process.
	ErrChallengeStale = errors.New("registration challenge expired or already used; fetch a new one")
	// errChallengesBusy means too many challenges are in use at once.
	errChallengesBusy = errors.New("too many registrations at once, retry later")
)

const (
	challengeNonceLen = 16
	challengeTagLen   = 16
	challengeLen      = 8 + challengeNonceLen + challengeTagLen
)

type challenges struct {
	secret [32]byte
	now    func() time.Time
	// claim, if set, uses a nonce up for every replica: false if one did.
	claim func(nonce []byte, exp time.Time) (bool, error)

	mu      sync.Mutex
	used    map[[challengeNonceLen]byte]time.Time // nonce -> expiry
	pruneAt time.Time
}

func newChallenges(now func() time.Time) (*challenges, error) {
	c := &challenges{now: now, used: make(map[[challengeNonceLen]byte]time.Time)}
	if _, err := rand.Read(c.secret[:]); err != nil {
		return nil, fmt.Errorf("challenge secret: %w", err)
	}
	return c, nil
}

func (c *challenges) tag(body []byte) []byte {
	m := hmac.New(sha256.New, c.secret[:])
	m.Write(body)
	return m.Sum(nil)[:challengeTagLen]
}

// issue makes a fresh challenge.
func (c *challenges) issue() (string, error) {
	b := make([]byte, 8+challengeNonceLen, challengeLen)
	binary.BigEndian.PutUint64(b, uint64(c.now().Add(challengeTTL).UnixMilli()))
	if _, err := rand.Read(b[8:]); err != nil {
		return "", fmt.Errorf("challenge: %w", err)
	}
	b = append(b, c.tag(b)...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// use accepts s once if this process issued it and it has not expired.
func (c *challenges) use(s string) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != challengeLen {
		return ErrChallengeStale
	}
	body, tag := b[:8+challengeNonceLen], b[8+challengeNonceLen:]
	if !hmac.Equal(tag, c.tag(body)) {
		return ErrChallengeStale
	}
	now := c.now()
	exp := time.UnixMilli(int64(binary.BigEndian.Uint64(body)))
	if !now.Before(exp) || exp.After(now.Add(challengeTTL)) {
		return ErrChallengeStale
	}
	var nonce [challengeNonceLen]byte
	copy(nonce[:], body[8:])
	c.mu.Lock()
	_, seen := c.used[nonce]
	c.mu.Unlock()
	if seen {
		return ErrChallengeStale
	}
	if c.claim != nil {
		ok, err := c.claim(nonce[:], exp)
		if err != nil {
			return err
		}
		if !ok {
			return ErrChallengeStale
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.used[nonce]; seen {
		return ErrChallengeStale
	}
	// Forget expired ones at most once a second: a full map must not cost
	// a scan per request.
	if !now.Before(c.pruneAt) {
		for n, e := range c.used {
			if !now.Before(e) {
				delete(c.used, n)
			}
		}
		c.pruneAt = now.Add(time.Second)
	}
	if len(c.used) >= maxUsedChallenges {
		return errChallengesBusy
	}
	c.used[nonce] = exp
	return nil
}

// secretChallenge names the challenge secret in the store's secrets table.
const secretChallenge = "challenge_secret"

// newSharedChallenges makes challenges whose secret and used nonces live in
// the store, for replicas.
func newSharedChallenges(ctx context.Context, st *Store, now func() time.Time) (*challenges, error) {
	v, err := st.sharedSecret(ctx, secretChallenge, func() (string, error) {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return "", fmt.Errorf("challenge secret: %w", err)
		}
		return base64.StdEncoding.EncodeToString(k[:]), nil
	})
	if err != nil {
		return nil, fmt.Errorf("challenge secret: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(k) != 32 {
		return nil, errors.New("challenge secret in the store's secrets table: not 32 bytes of base64, delete its row to make a new one")
	}
	c := &challenges{now: now, used: make(map[[challengeNonceLen]byte]time.Time)}
	copy(c.secret[:], k)
	c.claim = func(nonce []byte, exp time.Time) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		defer cancel()
		return st.claimChallenge(ctx, nonce, exp)
	}
	return c, nil
}

package relay

import (
	"testing"
	"time"
)

func TestTURNCredentialRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	user, pass := MintCredential(secret, 42, now.Add(time.Hour))
	if user != "1800003600:42" {
		t.Errorf("username %q, want expiry:node", user)
	}
	if pass != Password(secret, user) || pass == Password([]byte("other secret 0123456789abcdef012"), user) {
		t.Error("password is not the HMAC of the username under the secret")
	}
	if node, err := ParseUsername(user, now); err != nil || node != 42 {
		t.Errorf("parse fresh username: node %d, err %v", node, err)
	}
	if _, err := ParseUsername(user, now.Add(2*time.Hour)); err != ErrExpired {
		t.Errorf("parse expired username: err %v, want %v", err, ErrExpired)
	}
	for _, bad := range []string{"", "42", "abc:42", "1800003600:", "1800003600:x", "1800003600:0"} {
		if _, err := ParseUsername(bad, now); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

// TestTURNPasswordKnownAnswer checks Password against answers computed
// elsewhere, so a wrong MAC or encoding cannot pass by agreeing with itself:
// RFC 2202's HMAC-SHA1 test case 2 (digest effcdf6a…9a7c79, base64-encoded),
// and a REST-scheme username as coturn's use-auth-secret checks it,
// computed with `printf %s USER | openssl dgst -sha1 -hmac SECRET -binary | base64`.
func TestTURNPasswordKnownAnswer(t *testing.T) {
	for _, c := range []struct{ secret, user, want string }{
		{"Jefe", "what do ya want for nothing?", "7/zfauXrL6LSdBbV8YTfnCWafHk="},
		{"0123456789abcdef0123456789abcdef", "1800003600:42", "rs3hno97k1Oa3XbYkND+aDn7mt8="},
	} {
		if got := Password([]byte(c.secret), c.user); got != c.want {
			t.Errorf("Password(%q, %q) = %q, want %q", c.secret, c.user, got, c.want)
		}
	}
}

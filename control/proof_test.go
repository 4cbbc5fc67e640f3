package control

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestRegisterProofBindsEveryField: changing any field, or moving bytes
// from one field to the next, changes the proof.
func TestRegisterProofBindsEveryField(t *testing.T) {
	shared := make([]byte, 32)
	shared[0] = 1
	coord := base64.StdEncoding.EncodeToString(make([]byte, 32))
	base := RegisterRequest{AuthKey: "mvk-ab", Credential: "", Hostname: "host", PublicKey: strings.Repeat("B", 43) + "=", Challenge: "ch"}
	p := RegisterProof(shared, coord, &base)
	base.Proof = p
	if !VerifyRegisterProof(shared, coord, &base) {
		t.Fatal("a proof does not verify")
	}
	variants := []func(r *RegisterRequest){
		func(r *RegisterRequest) { r.AuthKey = "mvk-ac" },
		func(r *RegisterRequest) { r.Credential = "1.x" },
		func(r *RegisterRequest) { r.Hostname = "hosu" },
		func(r *RegisterRequest) { r.PublicKey = strings.Repeat("C", 43) + "=" },
		func(r *RegisterRequest) { r.Challenge = "ci" },
		// The same bytes split differently between two fields.
		func(r *RegisterRequest) { r.AuthKey, r.Credential = "mvk-a", "b" },
	}
	for i, v := range variants {
		r := base
		v(&r)
		if VerifyRegisterProof(shared, coord, &r) {
			t.Errorf("variant %d verifies with the original proof", i)
		}
	}
	other := base64.StdEncoding.EncodeToString(append(make([]byte, 31), 9))
	if VerifyRegisterProof(shared, other, &base) {
		t.Error("proof verifies for another coordinator key")
	}
	shared[0] = 2
	if VerifyRegisterProof(shared, coord, &base) {
		t.Error("proof verifies with another shared secret")
	}
}

func TestValidatePublicKeyCanonical(t *testing.T) {
	good := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	if err := ValidatePublicKey(good); err != nil {
		t.Fatalf("%s: %v", good, err)
	}
	alias := []byte(good)
	alias[42]++ // sets a spare bit: same 32 bytes to a lenient decoder
	for _, bad := range []string{string(alias), good[:40] + "\n\n==", good[:43] + "A", strings.Repeat("*", 43) + "=", ""} {
		if err := ValidatePublicKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

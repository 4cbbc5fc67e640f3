package hub

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

// FuzzDecodeAgentFrame: no frame makes the decoder panic, and whatever it
// accepts is a valid signal whose encoding stays small.
func FuzzDecodeAgentFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"signal","signal":{"to":2,"kind":"offer","session":"0123456789abcdef","ufrag":"abcd","pwd":"0123456789012345678901","nat":"symmetric"}}`,
		`{"type":"signal","signal":{"to":2,"kind":"candidate","session":"s","candidate":"candidate:1 1 udp 2130706431 2001:db8::1 40000 typ srflx raddr 10.0.0.1 rport 40000","lane":"relay"}}`,
		`{"type":"signal","signal":{"to":2,"kind":"` + strings.Repeat("x", 100) + `"}}`,
		`{"type":"signal","signal":null}`,
		`{"type":"netmap"}`,
		`{"type":"signal","signal":{"kind":"a\u0000b"}}`,
		`[`, ``, `{"type":"signal","signal":{"to":-1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sig, err := DecodeSignal(data)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes: a sender could grow our logs", len(err.Error()))
			}
			return
		}
		if verr := sig.Validate(); verr != nil {
			t.Fatalf("accepted an invalid signal: %v", verr)
		}
		b, err := json.Marshal(control.Message{Type: control.MsgSignal, Signal: sig})
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 2*control.MaxSignalFrame {
			t.Fatalf("accepted signal encodes to %d bytes", len(b))
		}
	})
}

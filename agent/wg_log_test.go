package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/internal/lograte"
)

// wireguard-go names the peer in its error text; a hundred unreachable
// peers are still one kind of line for the rate limit.
func TestWGErrorsOneKindPerFormat(t *testing.T) {
	var buf bytes.Buffer
	wl := newWGLogger(slog.New(lograte.New(slog.NewTextHandler(&buf, nil), lograte.Options{Burst: 5})))
	for i := range 100 {
		wl.Errorf("%v - Failed to send handshake initiation: %v", "peer("+strings.Repeat("k", i%7)+string(rune('a'+i%26))+")", errors.New("no known endpoint for peer"))
	}
	if n := strings.Count(buf.String(), "\n"); n != 5 {
		t.Errorf("%d of 100 handshake errors written, want 5:\n%s", n, buf.String())
	}
}

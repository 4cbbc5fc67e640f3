package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/portmap"
)

// A host without a mapping gateway retries every minute, each time from
// new ephemeral ports that the error names: it warns once, not each minute.
// A new reason, or a failure after a success, warns again.
func TestPortmapFailureLoggedOncePerReason(t *testing.T) {
	var buf bytes.Buffer
	a := &Agent{log: slog.New(slog.NewTextHandler(&buf, nil))}
	pm := &portMapper{a: a, client: portmap.NewClient(portmap.Config{})}
	noGW := func(port int) error {
		return fmt.Errorf("%w (gateway 10.1.0.1: nat-pmp: read udp4 10.1.0.11:%d->10.1.0.1:5351: connection refused)", portmap.ErrNoGateway, port)
	}
	for i := range 5 {
		pm.set(portmap.Mapping{}, noGW(40000+i))
	}
	pm.set(portmap.Mapping{}, errors.New("gateway does not know its external address (0.0.0.0)"))
	pm.set(portmap.Mapping{}, noGW(41000))
	if n := strings.Count(buf.String(), "no port mapping offered"); n != 3 {
		t.Errorf("%d warnings for 5 retries without a gateway, one other reason and back, want 3:\n%s", n, buf.String())
	}
}

package coordinator

import (
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator/hub/hubtest"
)

// batchServer is a server whose hub sends only when the test says so.
func batchServer(t *testing.T) (*Server, string) {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t), batchWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, newKey(t, s.store, true, 0)
}

func addNode(t *testing.T, s *Server, key, name string) uint64 {
	t.Helper()
	return mustRegister(t, s.Handler(), control.RegisterRequest{AuthKey: key, Hostname: name, PublicKey: newPublicKey(t)}).NodeID
}

// attachConn attaches a fake stream to s's hub, as protocol version.
func attachConn(t *testing.T, s *Server, c *hubtest.Conn, version int) {
	t.Helper()
	if err := s.hub.Attach(t.Context(), c.Stream, version, "", control.Netmap{}); err != nil {
		t.Fatal(err)
	}
}

package coordinator

import (
	"encoding/json"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"testing"

	"github.com/meshvpn/meshvpn/control"
)

func TestNetcheckInfo(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) {
		s.cfg.STUNAltListen = "127.0.0.2:0"
	})
	resp, err := http.Get(base + control.PathNetcheckInfo)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var info control.NetcheckInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	alt := s.STUNAltAddr().(*net.UDPAddr)
	want := []control.STUNServer{{
		Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(s.STUNAddr().(*net.UDPAddr).Port)),
		Alternate: net.JoinHostPort("127.0.0.2", strconv.Itoa(alt.Port)),
	}}
	if !reflect.DeepEqual(info.STUN, want) {
		t.Fatalf("netcheck-info STUN %+v, want %+v", info.STUN, want)
	}
	post, err := http.Post(base+control.PathNetcheckInfo, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: status %d, want 405", post.StatusCode)
	}
}

// A port-only alternate is advertised in the netmap under the host the
// agent used, next to the plain STUN list older agents read.
func TestNetmapCarriesSTUNAlternate(t *testing.T) {
	s, base := startServer(t, t.TempDir(), func(s *Server) {
		s.cfg.STUNAltListen = ":0"
	})
	key := newKey(t, s.store, true, 0)
	a := registerHTTP(t, base, control.RegisterRequest{AuthKey: key, Hostname: "alpha", PublicKey: newPublicKey(t)})
	m := readMsg(t, dialStream(t, base, a.Credential))
	if m.Netmap == nil {
		t.Fatalf("first frame: %+v", m)
	}
	primary := "127.0.0.1:" + strconv.Itoa(s.STUNAddr().(*net.UDPAddr).Port)
	alt := "127.0.0.1:" + strconv.Itoa(s.STUNAltAddr().(*net.UDPAddr).Port)
	want := []control.STUNServer{{Addr: primary, Alternate: alt}}
	if !reflect.DeepEqual(m.Netmap.STUN, []string{primary}) || !reflect.DeepEqual(m.Netmap.STUNServers, want) {
		t.Fatalf("netmap stun %v, stun_servers %+v; want [%s] and %+v", m.Netmap.STUN, m.Netmap.STUNServers, primary, want)
	}
}

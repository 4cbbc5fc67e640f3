package netcheck

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

// TestRunAgainstCoordinator runs the whole check against a real
// coordinator on loopback, whose STUN server has a second IP (127.0.0.2)
// and port. Loopback has no NAT: "none", and every reply gets in.
func TestRunAgainstCoordinator(t *testing.T) {
	srv := runCoordinator(t, coordinator.Config{
		Listen: "127.0.0.1:0", StateDir: t.TempDir(),
		STUNListen: "127.0.0.1:0", STUNAltListen: "127.0.0.2:0",
	})
	info, err := FetchInfo(t.Context(), "http://"+srv.HTTPAddr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.STUN) != 1 || info.STUN[0].Alternate == "" {
		t.Fatalf("netcheck-info %+v: want one STUN server with an alternate", info)
	}
	rep, err := Run(t.Context(), Config{STUN: info.STUN, TURN: []string{info.STUN[0].Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.NATType != NATNone || !rep.UDP || rep.Filtering != EndpointIndependent || rep.Mapping != EndpointIndependent {
		t.Fatalf("report %+v, want no NAT and endpoint-independent filtering", rep)
	}
	if rep.Tests.ChangeIPPort != "answered" || rep.Tests.ChangePort != "answered" {
		t.Errorf("tests %+v, want both answered", rep.Tests)
	}
	// Primary, alternate and the cross address were asked.
	if len(rep.Tests.Bindings) != 3 {
		t.Errorf("bindings %+v, want 3", rep.Tests.Bindings)
	}
	kinds := map[string]bool{}
	for _, s := range rep.Servers {
		if s.LatencyMs == nil || s.Error != "" {
			t.Errorf("server %+v: no latency", s)
		}
		kinds[s.Kind] = true
	}
	if !kinds[KindSTUN] || !kinds[KindSTUNAlternate] || !kinds[KindTURN] {
		t.Errorf("servers %+v: want stun, stun-alternate and turn", rep.Servers)
	}
	if rep.PortMapping.Probed {
		t.Errorf("port mapping probed without a probe")
	}
}

// runCoordinator runs a real coordinator with cfg until the test ends.
func runCoordinator(t *testing.T, cfg coordinator.Config) *coordinator.Server {
	t.Helper()
	srv, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

// plainSTUN answers every Binding request from the socket it arrived on,
// ignoring CHANGE-REQUEST, as a server without RFC 5780 does.
func plainSTUN(t *testing.T, answer bool) *net.UDPConn {
	t.Helper()
	return fakeSTUN(t, answer, nil)
}

// fakeSTUN is plainSTUN that hands every request to record, when not nil.
func fakeSTUN(t *testing.T, answer bool, record func(from *net.UDPAddr, req *stun.Message)) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var req stun.Message
			if stun.Decode(buf[:n], &req) != nil {
				continue
			}
			if record != nil {
				record(from, &req)
			}
			if !answer {
				continue
			}
			resp := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: from.IP, Port: from.Port})
			conn.WriteToUDP(resp.Raw, from)
		}
	}()
	return conn
}

func TestRunServerIgnoresChangeRequest(t *testing.T) {
	a, b := plainSTUN(t, true), plainSTUN(t, true)
	rep, err := Run(t.Context(), Config{
		STUN:         []control.STUNServer{{Addr: a.LocalAddr().String(), Alternate: b.LocalAddr().String()}},
		ProbeTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tests.ChangePort != "not tested" || !strings.Contains(rep.Tests.ChangePortReason, "ignored CHANGE-REQUEST") {
		t.Errorf("change port: %q (%s), want not tested because ignored", rep.Tests.ChangePort, rep.Tests.ChangePortReason)
	}
	if rep.Filtering != Unknown {
		t.Errorf("filtering %q, want unknown", rep.Filtering)
	}
}

func TestRunNoAnswer(t *testing.T) {
	silent := plainSTUN(t, false)
	start := time.Now()
	rep, err := Run(t.Context(), Config{
		STUN:         []control.STUNServer{{Addr: silent.LocalAddr().String()}, {Addr: "no-such-host.invalid:3478"}, {Addr: "bad"}},
		ProbeTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.UDP || rep.NATType != NATUDPBlocked || rep.Reason == "" {
		t.Fatalf("report %+v, want UDP blocked with a reason", rep)
	}
	if len(rep.Servers) != 3 || rep.Servers[0].Addr != silent.LocalAddr().String() || rep.Servers[2].Addr != "bad" {
		t.Fatalf("servers %+v, want all three listed in the order given", rep.Servers)
	}
	for _, s := range rep.Servers {
		if s.Error == "" || s.LatencyMs != nil {
			t.Errorf("server %+v: want an error and no latency", s)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 300ms probe timeout", d)
	}
}

func TestRunPortMapSlot(t *testing.T) {
	a := plainSTUN(t, true)
	rep, err := Run(t.Context(), Config{
		STUN:         []control.STUNServer{{Addr: a.LocalAddr().String()}},
		ProbeTimeout: 300 * time.Millisecond,
		PortMapProbe: func(context.Context) (PortMapResult, error) {
			return PortMapResult{NATPMP: true, Protocol: "nat-pmp", External: "198.51.100.7:4000"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if pm := rep.PortMapping; !pm.Probed || !pm.NATPMP || pm.External != "198.51.100.7:4000" {
		t.Errorf("port mapping %+v", pm)
	}
}

func TestFetchInfoErrors(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/garbage"+control.PathNetcheckInfo {
			w.Write([]byte("<html>"))
			return
		}
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
	}))
	defer ts.Close()
	for _, c := range []struct{ url, ca, want string }{
		{"ftp://example.com", "", "scheme must be http or https"},
		{"http://", "", "no host"},
		{"::", "", "coordinator URL"},
		{ts.URL, "", "HTTP 404: not found (a coordinator older than netcheck"},
		{ts.URL + "/garbage", "", "not a netcheck-info answer"},
		{ts.URL, "/nonexistent/ca.pem", "read CA file"},
	} {
		_, err := FetchInfo(t.Context(), c.url, c.ca)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.url, err, c.want)
		}
	}
}

// seenRequest is one Binding request a fakeSTUN server got.
type seenRequest struct {
	fromPort int
	change   bool // it carried a CHANGE-REQUEST
}

// TestRunSocketsApart checks that the CHANGE-REQUESTs of the filtering
// tests never leave from the socket whose mapping is measured: their
// unsolicited replies would move that mapping on a router without an input
// firewall (a cone NAT then reads as symmetric).
func TestRunSocketsApart(t *testing.T) {
	var mu sync.Mutex
	var seen []seenRequest
	record := func(from *net.UDPAddr, req *stun.Message) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, seenRequest{fromPort: from.Port, change: req.Contains(stun.AttrChangeRequest)})
	}
	a, b := fakeSTUN(t, true, record), fakeSTUN(t, true, record)
	rep, err := Run(t.Context(), Config{
		STUN:         []control.STUNServer{{Addr: a.LocalAddr().String(), Alternate: b.LocalAddr().String()}},
		ProbeTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	mapping, filtering := map[int]bool{}, map[int]bool{}
	for _, r := range seen {
		if r.change {
			filtering[r.fromPort] = true
		} else {
			mapping[r.fromPort] = true
		}
	}
	if len(filtering) == 0 || len(mapping) != 1 || !mapping[int(rep.LocalPort)] {
		t.Fatalf("plain Bindings from ports %v, CHANGE-REQUESTs from %v: want the Bindings from the one socket %d, and filtering tests", mapping, filtering, rep.LocalPort)
	}
	if filtering[int(rep.LocalPort)] {
		t.Errorf("CHANGE-REQUESTs from ports %v include the mapping socket's %d", filtering, rep.LocalPort)
	}
}

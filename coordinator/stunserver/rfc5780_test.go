package stunserver

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshvpn/meshvpn/control"
)

// serveSTUN starts a STUN server for one test.
func serveSTUN(t *testing.T, primary, alternate string) *Server {
	t.Helper()
	srv, err := Listen(primary, alternate, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

// exchange sends a Binding request (with a CHANGE-REQUEST when flags is
// not negative) from conn to to and returns the answer and where it came
// from, or nil after a short wait.
func exchange(t *testing.T, conn *net.UDPConn, to *net.UDPAddr, flags int) (*stun.Message, *net.UDPAddr) {
	t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if flags >= 0 {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, byte(flags)}})
	}
	req := stun.MustBuild(setters...)
	if _, err := conn.WriteToUDP(req.Raw, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil {
		return nil, nil
	}
	var resp stun.Message
	if err := stun.Decode(buf[:n], &resp); err != nil {
		t.Fatal(err)
	}
	if resp.TransactionID != req.TransactionID {
		t.Fatalf("answer to another transaction")
	}
	return &resp, from
}

func TestSTUNChangeRequest(t *testing.T) {
	// All of 127.0.0.0/8 is loopback on Linux: two IPs without set-up.
	srv := serveSTUN(t, "127.0.0.1:0", "127.0.0.2:0")
	if len(srv.socks) != 4 || srv.ips != 2 || srv.ports != 2 {
		t.Fatalf("%d sockets, %d IPs, %d ports; want 4, 2, 2", len(srv.socks), srv.ips, srv.ports)
	}
	p, a := srv.PrimaryAddr(), srv.AlternateAddr()
	if !a.IP.Equal(net.ParseIP("127.0.0.2")) || a.Port == p.Port {
		t.Fatalf("alternate %v, primary %v", a, p)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cases := []struct {
		name  string
		flags int
		want  *net.UDPAddr
	}{
		{"no change-request", -1, p},
		{"no flags", 0, p},
		{"change port", control.STUNChangePort, &net.UDPAddr{IP: p.IP, Port: a.Port}},
		{"change IP", control.STUNChangeIP, &net.UDPAddr{IP: a.IP, Port: p.Port}},
		{"change both", control.STUNChangeIP | control.STUNChangePort, a},
	}
	for _, c := range cases {
		resp, from := exchange(t, conn, p, c.flags)
		if resp == nil {
			t.Fatalf("%s: no answer", c.name)
		}
		if resp.Type != stun.BindingSuccess {
			t.Fatalf("%s: %v", c.name, resp.Type)
		}
		if from.String() != c.want.String() {
			t.Errorf("%s: answer from %v, want %v", c.name, from, c.want)
		}
		var origin stun.ResponseOrigin
		if err := origin.GetFrom(resp); err != nil || origin.Port != from.Port || !origin.IP.Equal(from.IP) {
			t.Errorf("%s: RESPONSE-ORIGIN %v (%v), want %v", c.name, origin, err, from)
		}
		var other stun.OtherAddress
		if err := other.GetFrom(resp); err != nil || other.Port != a.Port || !other.IP.Equal(a.IP) {
			t.Errorf("%s: OTHER-ADDRESS %v (%v), want %v", c.name, other, err, a)
		}
	}
	// Asked on the alternate, "the other address" is the primary.
	resp, from := exchange(t, conn, a, control.STUNChangeIP|control.STUNChangePort)
	if resp == nil || from.String() != p.String() {
		t.Fatalf("change both on the alternate: answer from %v, want %v", from, p)
	}
}

func TestSTUNChangeRequestPortOnly(t *testing.T) {
	srv := serveSTUN(t, "127.0.0.1:0", ":0")
	if len(srv.socks) != 2 || srv.ips != 1 || srv.ports != 2 {
		t.Fatalf("%d sockets, %d IPs, %d ports; want 2, 1, 2", len(srv.socks), srv.ips, srv.ports)
	}
	p, a := srv.PrimaryAddr(), srv.AlternateAddr()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, from := exchange(t, conn, p, control.STUNChangePort)
	if resp == nil || resp.Type != stun.BindingSuccess || from.Port != a.Port {
		t.Fatalf("change port: %v from %v, want success from port %d", resp, from, a.Port)
	}
	// Only two addresses: no OTHER-ADDRESS to give.
	if resp.Contains(stun.AttrOtherAddress) {
		t.Errorf("OTHER-ADDRESS given by a server without a second IP")
	}
	resp, from = exchange(t, conn, p, control.STUNChangeIP)
	if resp == nil {
		t.Fatal("change IP: no answer, want 420")
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(resp); err != nil || code.Code != stun.CodeUnknownAttribute || from.Port != p.Port {
		t.Fatalf("change IP: %v code %v from %v, want 420 from the primary", resp.Type, code.Code, from)
	}
	// A malformed CHANGE-REQUEST gets 400.
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{1}})
	conn.WriteToUDP(req.Raw, p)
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	var bad stun.Message
	if err := stun.Decode(buf[:n], &bad); err != nil {
		t.Fatal(err)
	}
	if err := code.GetFrom(&bad); err != nil || code.Code != stun.CodeBadRequest {
		t.Fatalf("short CHANGE-REQUEST: code %v (%v), want 400", code.Code, err)
	}
}

func TestSTUNAlternateRejected(t *testing.T) {
	for name, c := range map[string][2]string{
		"same address":      {"127.0.0.1:0", "127.0.0.1:0"},
		"wildcard, two IPs": {":0", "127.0.0.2:0"},
		"bad address":       {"127.0.0.1:0", "127.0.0.1:notaport"},
	} {
		if name == "same address" {
			// Port 0 twice would be two ports; a fixed port is the clash.
			srv, err := Listen(c[0], "", testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			c[1] = srv.PrimaryAddr().String()
			srv.Close()
			c[0] = c[1]
		}
		srv, err := Listen(c[0], c[1], testLogger(t))
		if err == nil {
			srv.Close()
			t.Errorf("%s: %s with alternate %s accepted", name, c[0], c[1])
		}
	}
}

// FuzzSTUNAnswer feeds arbitrary packets to a server with all four
// addresses: never a panic, and any answer is a STUN message sent from one
// of the server's own sockets.
func FuzzSTUNAnswer(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, 6}}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0xff}}).Raw)
	f.Add([]byte("not stun"))
	srv, err := Listen("127.0.0.1:0", "127.0.0.2:0", testLogger(f))
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	from := &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, on := range srv.socks {
			resp, via, ok := srv.answer(pkt, from, on)
			if !ok {
				continue
			}
			if via == nil || !stun.IsMessage(resp) {
				t.Fatalf("answer %x via %v", resp, via)
			}
		}
	})
}

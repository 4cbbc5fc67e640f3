package stunserver

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestSTUNBinding(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	defer func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	conn, err := net.DialUDP("udp", nil, srv.PrimaryAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Garbage and non-requests get no answer, and do not stop the server.
	conn.Write([]byte("hello, not stun"))
	conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw)
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("answer to garbage: %x", buf[:n])
	}

	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var resp stun.Message
	if err := stun.Decode(buf[:n], &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("response %v", &resp)
	}
	if err := stun.Fingerprint.Check(&resp); err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(&resp); err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.UDPAddr)
	if !xor.IP.Equal(local.IP) || xor.Port != local.Port {
		t.Fatalf("XOR-MAPPED-ADDRESS %v, want %v", &xor, local)
	}
}

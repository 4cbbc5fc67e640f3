package coordinator

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// TestSlowBodyCutOff: a request body trickled a byte at a time is cut off
// once the body timeout has passed, while the stream (which has no body
// timeout) stays open.
func TestSlowBodyCutOff(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), func(s *Server) { s.bodyTimeout = time.Second })
	c, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST "+control.PathRegister+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c)
		done <- string(b)
	}()
	start := time.Now()
	for {
		select {
		case answer := <-done:
			t.Logf("cut off after %v: %q", time.Since(start).Round(time.Millisecond), firstLineOf(answer))
			return
		case <-time.After(200 * time.Millisecond):
			if time.Since(start) > 5*time.Second {
				t.Fatalf("trickled body still open after %v (body timeout 1s)", time.Since(start).Round(time.Millisecond))
			}
			c.Write([]byte(" "))
		}
	}
}

func firstLineOf(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// TestConnCapPerSource: connections beyond the cap from one source are
// closed at once; closing one makes room again.
func TestConnCapPerSource(t *testing.T) {
	s, _ := runServerCap(t, 3)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", s.HTTPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	closedSoon := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	extra, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedSoon(extra) {
		t.Fatal("a fourth connection from the same source stayed open (cap 3)")
	}
	if closedSoon(conns[0]) {
		t.Fatal("a connection within the cap was closed")
	}
	conns[2].Close()
	time.Sleep(100 * time.Millisecond)
	again, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if closedSoon(again) {
		t.Fatal("no room after a connection closed")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func runServerCap(t *testing.T, n int) (*Server, string) {
	t.Helper()
	s, stop := runServer(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Logger: testLogger(t), MaxConnsPerSource: n})
	t.Cleanup(func() { stop() })
	return s, "http://" + s.HTTPAddr().String()
}

package natlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestWANDelay checks a site's WAN delay: pings from behind it take at
// least twice the delay (once each way) while a site without one answers
// in well under it, and a TCP transfer of 4 MiB (segments bigger than the
// MTU, checksums left to the kernel) crosses the delay box intact.
func TestWANDelay(t *testing.T) {
	Require(t)
	lab, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustPublic(t, lab, "pub", "203.0.113.20")
	const delay = 15 * time.Millisecond
	slow, err := lab.AddSiteSpec("slow", SiteSpec{Kind: PortRestricted, Variant: InputAccept, WANDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := lab.AddSite("fast", PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.AddSiteSpec("bad", SiteSpec{Kind: FullCone, WANDelay: 2 * time.Second}); err == nil {
		t.Error("WANDelay 2s accepted; want an error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rtt := func(h *Host) (lo, hi time.Duration) {
		out, err := h.Run(ctx, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", pub.IP.String())
		if err != nil {
			t.Fatalf("ping from %s: %v\n%s", h.Name, err, out)
		}
		m := regexp.MustCompile(`= ([0-9.]+)/[0-9.]+/([0-9.]+)/`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no rtt in ping output:\n%s", out)
		}
		ms := func(s string) time.Duration {
			f, _ := strconv.ParseFloat(s, 64)
			return time.Duration(f * float64(time.Millisecond))
		}
		return ms(m[1]), ms(m[2])
	}
	lo, hi := rtt(slow.Host)
	t.Logf("rtt behind a %v WAN delay: min %v, max %v", delay, lo, hi)
	if lo < 2*delay {
		t.Errorf("rtt min %v behind a %v WAN delay; want at least %v", lo, delay, 2*delay)
	}
	flo, fhi := rtt(fast.Host)
	t.Logf("rtt without delay: min %v, max %v", flo, fhi)
	if flo >= delay {
		t.Errorf("rtt min %v without a WAN delay; want under %v", flo, delay)
	}

	// TCP through the box: slow's host sends, pub compares what came.
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	var ln net.Listener
	if err := pub.Do(func() (err error) { ln, err = net.Listen("tcp", pub.IP.String()+":7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var conn net.Conn
	if err := slow.Host.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", pub.IP.String()+":7000", 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("tcp write through the delay box: %v", err)
	}
	conn.Close()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Errorf("tcp through the delay box: got %d bytes (equal %v), want the %d sent", len(b), bytes.Equal(b, payload), len(payload))
	}
}

package relay

import (
	"net"
	"testing"
	"time"
)

func TestRelayQuota(t *testing.T) {
	for _, c := range []struct{ members, ports, want int }{
		{1, 16384, 16}, {2, 16384, 16}, {10, 16384, 28}, {1000, 16384, 2008}, {10000, 16384, 4096}, {50, 100, 25}, {50, 40, 16},
	} {
		if got := relayQuota(c.members, c.ports); got != c.want {
			t.Errorf("relayQuota(%d members, %d ports) = %d, want %d", c.members, c.ports, got, c.want)
		}
	}
}

func TestRelayAllocsTable(t *testing.T) {
	quota := 3
	tab := newRelayAllocs(time.Minute, func() int { return quota })
	guard := hostGuard{allocs: tab, own: newOwnAddrs()}
	now := time.Unix(1000, 0)
	open := func(node uint64, udp bool) (net.PacketConn, error) {
		pc, _, err := tab.open(node, udp, now, func() (net.PacketConn, net.Addr, error) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return nil, nil, err
			}
			return pc, pc.LocalAddr(), nil
		}, guard)
		if err == nil {
			t.Cleanup(func() { pc.Close() })
		}
		return pc, err
	}
	var conns []net.PacketConn
	for range 3 {
		pc, err := open(7, true)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, pc)
	}
	if _, err := open(7, true); err != errQuota || tab.underQuota(7) {
		t.Fatalf("fourth allocation: %v, want %v", err, errQuota)
	}
	if _, err := open(8, false); err != nil {
		t.Fatalf("another node refused: %v", err)
	}
	conns[0].Close()
	if tab.count(7) != 2 || !tab.underQuota(7) {
		t.Fatalf("after a close node 7 holds %d", tab.count(7))
	}
	// conns[1] was granted 30 s and is refreshed; conns[2] asked for an
	// hour and is never refreshed: the table's minute is the most it gets.
	p1, p2 := conns[1].LocalAddr().(*net.UDPAddr).Port, conns[2].LocalAddr().(*net.UDPAddr).Port
	tab.granted(p1, "198.51.100.1:1000", 30*time.Second, now)
	tab.granted(p2, "198.51.100.2:2000", time.Hour, now)
	tab.refreshed("198.51.100.1:1000", 30*time.Second, now.Add(40*time.Second))
	if n := tab.expire(now.Add(50 * time.Second)); n != 0 {
		t.Fatalf("%d allocations closed before their deadline", n)
	}
	if n := tab.expire(now.Add(61 * time.Second)); n != 1 || tab.count(7) != 1 {
		t.Fatalf("at 61 s: closed %d, node holds %d; want the unrefreshed one closed", n, tab.count(7))
	}
	if _, _, err := conns[2].ReadFrom(make([]byte, 10)); err == nil {
		t.Error("expired allocation's socket still open")
	}
	// Node 8's allocation came over TCP: no deadline, pion closes it with
	// its connection.
	if n := tab.expire(now.Add(time.Hour)); n != 1 || tab.count(8) != 1 {
		t.Fatalf("an hour later: closed %d, node 8 holds %d", n, tab.count(8))
	}
	if n := tab.dropNode(8); n != 1 || tab.count(8) != 0 {
		t.Fatalf("dropNode closed %d, node 8 holds %d", n, tab.count(8))
	}
}

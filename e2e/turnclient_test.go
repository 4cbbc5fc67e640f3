package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/pion/turn/v5"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// The tests of the embedded relay's limits play a member that misbehaves:
// a node registered by the real agent, whose relay credential the real
// coordinator minted and sent on the node's stream, used from a lab host
// with pion's TURN client in the test process (natlab.Host.Do puts its
// sockets in the host's namespace).

// relayMember is a registered node (its agent stopped) and the credential
// for the embedded relay's UDP URL the coordinator gave it.
type relayMember struct {
	name   string
	host   *natlab.Host
	server string // the relay's host:port
	relay  control.Relay
}

// newRelayMember registers a node called name with key from a new public
// host at ip, stops its agent and fetches its relay credential.
func newRelayMember(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, name, ip, key string) *relayMember {
	t.Helper()
	a := registerStopped(t, lab, coord, name, ip, key)
	h := a.Host
	relays, err := streamRelays(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range relays {
		if hp, ok := strings.CutPrefix(r.URL, "turn:"); ok && strings.HasSuffix(hp, "?transport=udp") {
			return &relayMember{name: name, host: h, server: strings.TrimSuffix(hp, "?transport=udp"), relay: r}
		}
	}
	t.Fatalf("%s: no embedded turn:...?transport=udp relay in %+v", name, relays)
	return nil
}

// registerStopped registers a node called name with key from a new public
// host at ip, and stops its agent.
func registerStopped(t *testing.T, lab *natlab.Lab, coord *meshlab.Coordinator, name, ip, key string) *meshlab.Agent {
	t.Helper()
	h, err := lab.AddPublicHost(name, ip)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, h, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Up(t.Context(), key, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	return a
}

// relayBetweenOwn allocates twice with m and checks that the relay passes
// a datagram from one allocation to the other: the control that makes a
// silence elsewhere mean a refusal. It returns both allocations.
func relayBetweenOwn(t *testing.T, m *relayMember) (net.PacketConn, net.PacketConn) {
	t.Helper()
	relayed, err := allocate(t, m.client(t))
	if err != nil {
		t.Fatal(err)
	}
	c2 := m.client(t)
	relayed2, err := allocate(t, c2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.CreatePermission(relayed.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := relayed.WriteTo([]byte("to the other allocation"), relayed2.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(relayed2, 5*time.Second); got != "to the other allocation" {
		t.Fatalf("relaying between two allocations on %s: got %q", relayed2.LocalAddr(), got)
	}
	return relayed, relayed2
}

// streamRelays opens the node's stream with the credential its agent
// stored (from the agent's host) and returns the relays of the first relay
// delta, which the coordinator sends right after the netmap.
func streamRelays(ctx context.Context, a *meshlab.Agent) ([]control.Relay, error) {
	b, err := os.ReadFile(filepath.Join(a.StateDir, "node.json"))
	if err != nil {
		return nil, err
	}
	var st struct {
		Credential string `json:"credential"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Credential == "" {
		return nil, errors.New("node.json holds no credential")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := a.Host.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	ws, _, err := websocket.Dial(ctx, a.Coord.URL+control.PathStream+"?v=2", &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": []string{"Bearer " + st.Credential}},
	})
	if err != nil {
		return nil, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	for range 50 {
		var m control.Message
		if err := wsjson.Read(ctx, ws, &m); err != nil {
			return nil, err
		}
		if m.Type == control.MsgDelta && m.Delta != nil && m.Delta.Relays != nil {
			return *m.Delta.Relays, nil
		}
	}
	return nil, errors.New("no relays on the stream")
}

// client returns a TURN client for m's credential over UDP from m's host.
func (m *relayMember) client(t *testing.T) *turn.Client {
	t.Helper()
	c, _ := m.clientConn(t)
	return c
}

// clientConn is client that also returns the client's socket.
func (m *relayMember) clientConn(t *testing.T) (*turn.Client, net.PacketConn) {
	t.Helper()
	var pc net.PacketConn
	if err := m.host.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return m.startClient(t, pc), pc
}

// tcpClient is client over a TCP connection to the relay.
func (m *relayMember) tcpClient(t *testing.T) *turn.Client {
	t.Helper()
	var c net.Conn
	if err := m.host.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", m.server, 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return m.startClient(t, turn.NewSTUNConn(c))
}

func (m *relayMember) startClient(t *testing.T, pc net.PacketConn) *turn.Client {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: m.server, TURNServerAddr: m.server, Conn: pc,
		Username: m.relay.Username, Password: m.relay.Password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	return c
}

// allocate makes a UDP allocation with c.
func allocate(t *testing.T, c *turn.Client) (net.PacketConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	relayed, err := c.AllocateWithContext(ctx)
	if err == nil {
		t.Cleanup(func() { relayed.Close() })
	}
	return relayed, err
}

// udpEcho answers every datagram to addr on h with the same bytes, and
// counts what it got.
func udpEcho(t *testing.T, h *natlab.Host, addr string) *atomic.Int64 {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var hits atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			hits.Add(1)
			pc.WriteTo(buf[:n], from)
		}
	}()
	return &hits
}

// readWithin reads one datagram from pc within d; "" when none came.
func readWithin(pc net.PacketConn, d time.Duration) string {
	buf := make([]byte, 1500)
	pc.SetReadDeadline(time.Now().Add(d))
	defer pc.SetReadDeadline(time.Time{})
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

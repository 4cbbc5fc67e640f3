package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestWireGuardKeepaliveRestartedOnReceipt pins the wireguard-go
// behaviour the birthday path's heartbeat exists for (birthdayheart.go):
// receiving a keepalive restarts the receiver's own keepalive timer. Here
// a sends every second and b's 3 s timer never fires: b stays silent on
// a working tunnel. With equal intervals on both sides (the agent's 25 s)
// each round is a race between one side's timer and the other's packet,
// so either side can stay silent for several rounds.
func TestWireGuardKeepaliveRestartedOnReceipt(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several keepalive rounds")
	}
	ka, kb := mustKey(t), mustKey(t)
	a, pa := wgOnLoopback(t, ka)
	b, pb := wgOnLoopback(t, kb)
	// a alone starts the handshake (both at once can cross); b's timer
	// is turned on after it, which sends one keepalive at once.
	if err := b.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=10.0.0.1/32\n", ka.Public().Hex(), pa)); err != nil {
		t.Fatal(err)
	}
	if err := a.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=10.0.0.2/32\npersistent_keepalive_interval=1\n", kb.Public().Hex(), pb)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := b.IpcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=3\n", ka.Public().Hex())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	txA0, txB0 := wgTx(t, a), wgTx(t, b)
	time.Sleep(4 * time.Second) // past b's interval, four of a's
	dA, dB := wgTx(t, a)-txA0, wgTx(t, b)-txB0
	t.Logf("bytes sent over 4 idle seconds: a %d, b %d", dA, dB)
	if dA == 0 {
		t.Fatal("a sent no keepalives")
	}
	if dB > 0 {
		t.Fatalf("b sent %d bytes although a's keepalives came every second: wireguard-go no longer restarts the keepalive timer on receipt; WireGuard's counters may do for the birthday path's liveness again", dB)
	}
}

func mustKey(t *testing.T) Key {
	k, err := newPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wgOnLoopback(t *testing.T, k Key) (*device.Device, uint16) {
	d := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(d.Close)
	if err := d.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", k.Hex())); err != nil {
		t.Fatal(err)
	}
	if err := d.Up(); err != nil {
		t.Fatal(err)
	}
	var port uint16
	if _, err := fmt.Sscanf(ipcValue(t, d, "listen_port"), "%d", &port); err != nil {
		t.Fatal(err)
	}
	return d, port
}

func ipcValue(t *testing.T, d *device.Device, key string) string {
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func wgTx(t *testing.T, d *device.Device) uint64 {
	var n uint64
	_, _ = fmt.Sscanf(ipcValue(t, d, "tx_bytes"), "%d", &n)
	return n
}

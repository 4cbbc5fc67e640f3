package agent

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/meshvpn/meshvpn/internal/lograte"
)

// wgDevice configures the wireguard-go device through its UAPI text
// protocol, the same one `wg set` speaks.
type wgDevice struct {
	dev *device.Device
}

// newWGLogger routes wireguard-go's logs to log. Its errors name the peer
// and the error in the text, so the format is their kind for the rate limit.
func newWGLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf: func(format string, args ...any) {
			log.Log(lograte.WithKey(context.Background(), format), slog.LevelWarn, fmt.Sprintf(format, args...))
		},
	}
}

// persistentKeepalive keeps NAT mappings open even when the tunnel is idle:
// most NATs forget a UDP flow after 30 s to a few minutes.
const persistentKeepalive = 25

// allowedIPs is the UAPI lines that give a peer its overlay addresses.
func allowedIPs(overlay []netip.Prefix) string {
	var b strings.Builder
	for _, p := range overlay {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p)
	}
	return b.String()
}

// setOverlayIP makes the peer's overlay addresses (IPv4 /32, IPv6 /128)
// the only ones it may use.
func (w *wgDevice) setOverlayIP(key Key, overlay []netip.Prefix) error {
	cfg := fmt.Sprintf("public_key=%s\nreplace_allowed_ips=true\n%s", key.Hex(), allowedIPs(overlay))
	if err := w.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("set WireGuard peer address: %w", err)
	}
	return nil
}

func (w *wgDevice) removePeer(key Key) error {
	if err := w.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", key.Hex())); err != nil {
		return fmt.Errorf("remove WireGuard peer: %w", err)
	}
	return nil
}

// setEndpoint points the peer at the path ICE selected. With keepalive it
// also turns keepalives on, which starts a handshake at once when none has
// been attempted lately; without, WireGuard waits for the peer's handshake.
func (w *wgDevice) setEndpoint(key Key, ep netip.AddrPort, keepalive bool) error {
	cfg := fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", key.Hex(), ep)
	if keepalive {
		cfg += fmt.Sprintf("persistent_keepalive_interval=%d\n", persistentKeepalive)
	}
	if err := w.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("set WireGuard endpoint: %w", err)
	}
	return nil
}

// recreatePeer makes the peer afresh at ep, with keepalives on when asked
// (which starts a handshake at once). A fresh peer is the way to force a
// handshake: wireguard-go holds a new one back 5 s after any attempt.
func (w *wgDevice) recreatePeer(key Key, overlay []netip.Prefix, ep netip.AddrPort, keepalive bool) error {
	cfg := fmt.Sprintf("public_key=%s\nremove=true\npublic_key=%s\n%sendpoint=%s\n",
		key.Hex(), key.Hex(), allowedIPs(overlay), ep)
	if keepalive {
		cfg += fmt.Sprintf("persistent_keepalive_interval=%d\n", persistentKeepalive)
	}
	if err := w.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("create WireGuard peer: %w", err)
	}
	return nil
}

// handshaked tells whether the peer has completed a handshake.
func (w *wgDevice) handshaked(key Key) bool {
	st, err := w.stats()
	if err != nil {
		return false
	}
	return !st[key.Hex()].LastHandshake.IsZero()
}

// wgPeerStats is what wireguard-go reports of one peer.
type wgPeerStats struct {
	Endpoint      string
	LastHandshake time.Time
	RxBytes       uint64
	TxBytes       uint64
}

// stats reads every peer's counters, keyed by hex public key.
func (w *wgDevice) stats() (map[string]wgPeerStats, error) {
	s, err := w.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read WireGuard state: %w", err)
	}
	out := make(map[string]wgPeerStats)
	var cur string
	var st wgPeerStats
	var sec, nsec int64
	flush := func() {
		if cur == "" {
			return
		}
		if sec != 0 || nsec != 0 {
			st.LastHandshake = time.Unix(sec, nsec)
		}
		out[cur] = st
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			cur, st, sec, nsec = v, wgPeerStats{}, 0, 0
		case "endpoint":
			st.Endpoint = v
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			st.RxBytes, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			st.TxBytes, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	flush()
	return out, nil
}

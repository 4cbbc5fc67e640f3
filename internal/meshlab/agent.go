package meshlab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TUN is the device name every lab agent uses; each runs in its own
// namespace, so the names do not clash.
const TUN = "meshvpn0"

// Agent is one `meshvpn up` on a lab host. The filesystem is shared between
// namespaces, so each agent gets its own state dir and socket.
type Agent struct {
	Name     string // --hostname
	Host     *natlab.Host
	StateDir string
	Socket   string
	Coord    *Coordinator
	// URL, when set, is the coordinator URL instead of Coord.URL (e.g.
	// CoordinatorURLIPv6 on an IPv6-only host).
	URL string
	// NoCA leaves out --ca-file even when the coordinator uses the lab CA.
	NoCA bool
	// ExtraArgs are appended to `meshvpn up` (e.g. --no-portmap).
	ExtraArgs []string
	// Proc is the current `meshvpn up` process, nil before Up.
	Proc *natlab.Proc
}

// NewAgent prepares (but does not start) an agent called name on h.
func NewAgent(c *Coordinator, h *natlab.Host, name string) (*Agent, error) {
	dir := filepath.Join(h.Lab().Dir, "agent-"+name)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, err
	}
	return &Agent{
		Name:     name,
		Host:     h,
		StateDir: filepath.Join(dir, "state"),
		Socket:   filepath.Join(dir, "meshvpn.sock"),
		Coord:    c,
	}, nil
}

// Start runs `meshvpn up` in the background. With an empty authKey the flag
// is left out, as on a restart that rejoins with the stored credential.
func (a *Agent) Start(authKey string) error {
	url := a.Coord.URL
	if a.URL != "" {
		url = a.URL
	}
	args := []string{"up",
		"--coordinator", url,
		"--hostname", a.Name,
		"--state-dir", a.StateDir,
		"--socket", a.Socket,
		"--tun", TUN,
		"--port", "0",
	}
	if authKey != "" {
		// A file, not --authkey: a flag's value shows in ps.
		file := filepath.Join(filepath.Dir(a.StateDir), "authkey")
		if err := os.WriteFile(file, []byte(authKey+"\n"), 0o600); err != nil {
			return fmt.Errorf("meshlab: write auth key file: %w", err)
		}
		args = append(args, "--authkey-file", file)
	}
	if a.Coord.TLS != nil && !a.NoCA {
		args = append(args, "--ca-file", a.Coord.TLS.CA)
	}
	args = append(args, a.ExtraArgs...)
	p, err := a.Host.Start(a.Coord.Bins.Agent, args...)
	if err != nil {
		return err
	}
	a.Proc = p
	return nil
}

// Up starts the agent and waits until its status answers with an overlay
// address, or the process exits.
func (a *Agent) Up(ctx context.Context, authKey string, timeout time.Duration) error {
	if err := a.Start(authKey); err != nil {
		return err
	}
	return natlab.Poll(ctx, timeout, 250*time.Millisecond, func() error {
		if err := a.Running(); err != nil {
			return natlab.Fatal(err)
		}
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		if st.Self.IP == "" {
			return fmt.Errorf("agent %s has no overlay IP yet", a.Name)
		}
		return nil
	})
}

// Running returns an error saying how the agent ended, or nil while it
// runs. Wait loops use it to stop early with the real cause.
func (a *Agent) Running() error {
	if a.Proc == nil {
		return fmt.Errorf("meshlab: agent %s was never started", a.Name)
	}
	if a.Proc.Exited() {
		return fmt.Errorf("meshlab: agent %s ended unexpectedly (%s; status 0 means something sent it SIGTERM); see %s", a.Name, a.Proc.State(), a.Proc.LogPath)
	}
	return nil
}

// Stop sends SIGTERM and waits for a clean exit.
func (a *Agent) Stop(timeout time.Duration) error {
	if a.Proc == nil {
		return nil
	}
	return a.Proc.Stop(timeout)
}

// Status runs `meshvpn status --json`.
func (a *Agent) Status(ctx context.Context) (*Status, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := a.Host.Run(cctx, a.Coord.Bins.Agent, "status", "--socket", a.Socket, "--json")
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("meshlab: %s status: %w in %q", a.Name, err, out)
	}
	return &st, nil
}

// Ping runs `meshvpn ping PEER -c N` and returns its output.
func (a *Agent) Ping(ctx context.Context, peer string, count int) (string, error) {
	return a.Host.Run(ctx, a.Coord.Bins.Agent, "ping", peer, "-c", fmt.Sprint(count), "--socket", a.Socket)
}

// HasTUN reports whether the agent's TUN device exists in its namespace.
func (a *Agent) HasTUN(ctx context.Context) bool {
	_, err := a.Host.Run(ctx, "ip", "link", "show", TUN)
	return err == nil
}

// WaitOnline waits until every agent lists all the others as online peers.
func WaitOnline(ctx context.Context, agents []*Agent, timeout time.Duration) error {
	want := len(agents) - 1
	return WaitAll(ctx, agents, timeout, func(a *Agent, st *Status) error {
		if n := st.OnlinePeers(); n < want {
			return fmt.Errorf("agent %s sees %d of %d peers online", a.Name, n, want)
		}
		return nil
	})
}

// WaitPath waits until a's status shows the given path to peer and returns
// that peer's last status line.
func WaitPath(ctx context.Context, a *Agent, peer, path string, timeout time.Duration) (*PeerStatus, error) {
	return WaitPeer(ctx, a, peer, timeout, func(p *PeerStatus) error {
		if p.Path != path {
			return fmt.Errorf("%s -> %s: path %q, want %q", a.Name, peer, p.Path, path)
		}
		return nil
	})
}

// PingIP sends ICMP echo over the overlay with the kernel's ping from a's
// namespace, so the packets take the real TUN data path.
func PingIP(ctx context.Context, a *Agent, ip string, count int) (string, error) {
	return a.Host.Run(ctx, "ping", "-n", "-c", fmt.Sprint(count), "-W", "2", ip)
}

// WaitConnected waits until a has a working path (direct or relay) to peer
// and returns that peer's status line.
func WaitConnected(ctx context.Context, a *Agent, peer string, timeout time.Duration) (*PeerStatus, error) {
	return WaitPeer(ctx, a, peer, timeout, func(p *PeerStatus) error {
		if p.Path != "direct" && p.Path != "relay" {
			return fmt.Errorf("%s -> %s: path %q", a.Name, peer, p.Path)
		}
		return nil
	})
}

// WaitPeer polls a's status until its line for peer passes ok, and returns
// the last line seen.
func WaitPeer(ctx context.Context, a *Agent, peer string, timeout time.Duration, ok func(*PeerStatus) error) (*PeerStatus, error) {
	var last *PeerStatus
	err := natlab.Poll(ctx, timeout, 500*time.Millisecond, func() error {
		if err := a.Running(); err != nil {
			return natlab.Fatal(err)
		}
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		if last = st.Peer(peer); last == nil {
			return fmt.Errorf("%s does not list peer %s", a.Name, peer)
		}
		return ok(last)
	})
	return last, err
}

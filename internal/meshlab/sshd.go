package meshlab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// SSHD is a real OpenSSH server in a lab namespace, with a throw-away host
// key and a client key allowed to log in as root.
type SSHD struct {
	Host *natlab.Host
	Proc *natlab.Proc
	// ClientKey is the private key that the server accepts.
	ClientKey string
}

// sshdConfig keeps everything in dir and off the machine's own sshd setup.
// StrictModes is off because the temp dir is not root:0700 all the way up;
// PAM is off because it is not needed for key logins in a namespace.
const sshdConfig = `Port 22
ListenAddress 0.0.0.0
ListenAddress ::
HostKey %[1]s/host_ed25519
AuthorizedKeysFile %[1]s/authorized_keys
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
`

// StartSSHD generates keys in dir, starts `/usr/sbin/sshd -D -e` in h's
// namespace and waits until it accepts connections.
func StartSSHD(ctx context.Context, h *natlab.Host, dir string) (*SSHD, error) {
	const sshd = "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		return nil, fmt.Errorf("meshlab: %s missing (apt-get install openssh-server): %w", sshd, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &SSHD{Host: h, ClientKey: filepath.Join(dir, "client_ed25519")}
	for _, key := range []string{filepath.Join(dir, "host_ed25519"), s.ClientKey} {
		if _, err := h.Run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshvpn-lab", "-f", key); err != nil {
			return nil, fmt.Errorf("meshlab: ssh-keygen: %w", err)
		}
	}
	pub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, sshdConfig, dir), 0o600); err != nil {
		return nil, err
	}
	// sshd insists on its privilege-separation directory; the filesystem
	// is shared, so this is the machine's /run/sshd.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	if s.Proc, err = h.Start(sshd, "-D", "-e", "-f", cfg); err != nil {
		return nil, err
	}
	if err := h.WaitTCP(ctx, "127.0.0.1:22", 10*time.Second); err != nil {
		return nil, fmt.Errorf("meshlab: sshd not listening: %w\n%s", err, s.Proc.Log())
	}
	return s, nil
}

// Run runs remoteCmd as root@target over ssh from the host from and
// returns its stdout.
func (s *SSHD) Run(ctx context.Context, from *natlab.Host, target, remoteCmd string) (string, error) {
	return from.Run(ctx, "ssh",
		"-F", "/dev/null", // ignore the machine's ssh_config and ~/.ssh/config
		"-i", s.ClientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR",
		"root@"+target, remoteCmd)
}

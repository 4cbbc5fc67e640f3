package meshlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// CoturnIP is where StartCoturn puts the relay.
const CoturnIP = "203.0.113.20"

// Coturn is a real coturn (Debian's turnserver) on a public lab host, set
// up for the TURN REST API scheme (use-auth-secret).
type Coturn struct {
	Host   *natlab.Host
	Proc   *natlab.Proc
	Secret string
	// SecretFile holds Secret (mode 0600), for --turn-secret-file.
	SecretFile string
	// URLs are its turn: URIs over UDP and TCP.
	URLs []string
}

// StartCoturn starts turnserver on a new public host "turn" at CoturnIP.
// It skips nothing: without turnserver installed it returns an error.
func StartCoturn(ctx context.Context, lab *natlab.Lab) (*Coturn, error) {
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		return nil, fmt.Errorf("meshlab: coturn not installed (apt-get install coturn): %w", err)
	}
	h, err := lab.AddPublicHost("turn", CoturnIP)
	if err != nil {
		return nil, err
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	c := &Coturn{Host: h, Secret: hex.EncodeToString(raw[:])}
	dir := filepath.Join(lab.Dir, "coturn")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c.SecretFile = filepath.Join(dir, "secret")
	if err := os.WriteFile(c.SecretFile, []byte(c.Secret+"\n"), 0o600); err != nil {
		return nil, err
	}
	conf := strings.Join([]string{
		"listening-ip=" + CoturnIP,
		"relay-ip=" + CoturnIP,
		"listening-port=3478",
		"min-port=51000",
		"max-port=51999",
		"use-auth-secret",
		"static-auth-secret=" + c.Secret,
		"realm=meshvpn.lab",
		"fingerprint",
		"no-tls",
		"no-dtls",
		"no-cli",
		"no-multicast-peers",
		"userdb=" + filepath.Join(dir, "turndb"),
		"pidfile=" + filepath.Join(dir, "turnserver.pid"),
		"log-file=stdout",
		"simple-log",
		"verbose",
		"",
	}, "\n")
	cfgPath := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	c.Proc, err = h.Start(bin, "-c", cfgPath)
	if err != nil {
		return nil, err
	}
	err = natlab.Poll(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		if c.Proc.Exited() {
			return natlab.Fatal(fmt.Errorf("turnserver exited: %v\n%s", c.Proc.Wait(0), c.Proc.Log()))
		}
		return h.WaitTCP(ctx, CoturnIP+":3478", 0)
	})
	if err != nil {
		return nil, fmt.Errorf("meshlab: coturn not ready: %w", err)
	}
	c.URLs = []string{
		"turn:" + CoturnIP + ":3478?transport=udp",
		"turn:" + CoturnIP + ":3478?transport=tcp",
	}
	return c, nil
}

// CoordinatorArgs are the serve flags that make this coturn the mesh's only
// relay.
func (c *Coturn) CoordinatorArgs() []string {
	args := []string{"--embedded-turn=false", "--turn-secret-file", c.SecretFile}
	for _, u := range c.URLs {
		args = append(args, "--turn-url", u)
	}
	return args
}

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// The SSH test uses a pair with a direct path (port-restricted needs
// relay to reach a symmetric NAT, see TestMeshAllNATPairs); its point is
// a real TCP application over the overlay, not NAT traversal.
const (
	sshClientNAT = natlab.PortRestricted
	sshServerNAT = natlab.RestrictedCone
)

// TestSSHOverOverlay logs in with real ssh to a real sshd over the overlay
// and checks that the command ran on the far side and that the connection
// used overlay addresses.
func TestSSHOverOverlay(t *testing.T) {
	lab, coord := newLab(t)
	key := authKey(t, coord, true)
	client := addSiteAgent(t, lab, coord, "laptop", sshClientNAT)
	server := addSiteAgent(t, lab, coord, "server", sshServerNAT)
	ctx := t.Context()
	for _, a := range []*meshlab.Agent{client, server} {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := meshlab.WaitOnline(ctx, []*meshlab.Agent{client, server}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	clientIP, serverIP := overlayIP(t, client), overlayIP(t, server)

	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := pingUntil(ctx, client, serverIP, 30*time.Second); err != nil {
		t.Fatalf("overlay ping before ssh: %v\n%s", err, out)
	}
	sshCheck(t, sshd, client, server, clientIP, serverIP)
}

// sshCheck runs a command over ssh from client to serverIP and checks that
// it ran on the server and that the connection went between the overlay
// addresses clientIP and serverIP.
func sshCheck(t *testing.T, sshd *meshlab.SSHD, client, server *meshlab.Agent, clientIP, serverIP string) {
	t.Helper()
	out, err := sshd.Run(t.Context(), client.Host, serverIP, `echo "$SSH_CONNECTION"; ip netns identify`)
	if err != nil {
		t.Fatalf("ssh over the overlay to %s: %v\n%s", serverIP, err, out)
	}
	t.Logf("ssh root@%s output:\n%s", serverIP, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines from the remote command, got %q", out)
	}
	// SSH_CONNECTION is "client_ip client_port server_ip server_port".
	conn := strings.Fields(lines[0])
	if len(conn) != 4 || conn[0] != clientIP || conn[2] != serverIP {
		t.Errorf("SSH_CONNECTION = %q, want %s -> %s (overlay addresses)", lines[0], clientIP, serverIP)
	}
	if lines[1] != server.Host.NS {
		t.Errorf("command ran in namespace %q, want the server's %q", lines[1], server.Host.NS)
	}
}

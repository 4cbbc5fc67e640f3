package meshlab

import (
	"strings"
	"testing"

	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestSSHD checks the sshd helper on its own (no meshvpn): a login across
// the lab's internet runs the command in the server's namespace.
func TestSSHD(t *testing.T) {
	natlab.Require(t)
	lab, err := natlab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	client, err := lab.AddPublicHost("client", "203.0.113.30")
	if err != nil {
		t.Fatal(err)
	}
	server, err := lab.AddPublicHost("server", "203.0.113.31")
	if err != nil {
		t.Fatal(err)
	}
	sshd, err := StartSSHD(t.Context(), server, lab.Dir+"/sshd")
	if err != nil {
		t.Fatal(err)
	}
	out, err := sshd.Run(t.Context(), client, "203.0.113.31", "ip netns identify")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != server.NS {
		t.Fatalf("remote command ran in namespace %q, want %q", got, server.NS)
	}
}

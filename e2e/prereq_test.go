package e2e

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestAgentWithoutPrivileges runs `meshvpn up` as an unprivileged user in a
// lab host: it must stop at once and name what it lacks.
func TestAgentWithoutPrivileges(t *testing.T) {
	lab, coord := newLab(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	site, err := lab.AddSite("plain", natlab.FullCone)
	if err != nil {
		t.Fatal(err)
	}
	// setpriv drops the capabilities at exec, so the binary itself may sit
	// in a directory only root can enter.
	out, err := site.Host.Run(t.Context(), setpriv,
		"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
		coord.Bins.Agent, "up", "--coordinator", coord.URL, "--authkey", "mvk-unused",
		"--state-dir", filepath.Join(lab.Dir, "nobody-state"), "--socket", filepath.Join(lab.Dir, "nobody.sock"))
	if err == nil {
		t.Fatalf("unprivileged meshvpn up succeeded:\n%s", out)
	}
	t.Logf("unprivileged meshvpn up: %v\n%s", err, out)
	if !strings.Contains(err.Error()+out, "CAP_NET_ADMIN") {
		t.Errorf("the error does not name CAP_NET_ADMIN:\n%s", out)
	}
}

// TestCoordinatorUnreachable starts an agent whose coordinator does not
// answer: it keeps retrying and says so, creates no TUN meanwhile, and
// stops cleanly when told to.
func TestCoordinatorUnreachable(t *testing.T) {
	lab, coord := newLab(t)
	site, err := lab.AddSite("island", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meshlab.NewAgent(coord, site.Host, "island")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens on port 9 of the coordinator's host.
	dead := *coord
	dead.URL = "http://" + meshlab.CoordinatorIP + ":9"
	a.Coord = &dead
	if err := a.Start("mvk-whatever"); err != nil {
		t.Fatal(err)
	}
	if err := a.Proc.WaitLog("coordinator unreachable, retrying", 20*time.Second); err != nil {
		t.Fatalf("agent never said the coordinator is unreachable: %v\n%s", err, a.Proc.Log())
	}
	time.Sleep(2 * time.Second)
	if a.Proc.Exited() {
		t.Fatalf("agent gave up instead of retrying:\n%s", a.Proc.Log())
	}
	if n := strings.Count(a.Proc.Log(), "coordinator unreachable"); n < 2 {
		t.Errorf("agent tried %d times in 2 s, want retries with backoff:\n%s", n, a.Proc.Log())
	}
	if a.HasTUN(t.Context()) {
		t.Errorf("TUN created before the node joined")
	}
	a.Proc.Signal(syscall.SIGTERM)
	err = a.Proc.Wait(15 * time.Second)
	if errors.Is(err, natlab.ErrTimeout) {
		t.Fatalf("agent did not stop on SIGTERM:\n%s", a.Proc.Log())
	}
	if code := a.Proc.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM while waiting for the coordinator, want 0:\n%s", code, a.Proc.Log())
	}
}

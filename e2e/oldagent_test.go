package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/meshvpn/meshvpn/internal/meshlab"
)

// consentOldCommit is main just before the agent checked consent itself
// (pion's 1 s checks from both sides): the "old agent" of
// TestConsentMixedVersions.
const consentOldCommit = "455381f525e5f0be957e2e11e7c82b4d8ac04ada"

// oldAgent returns an agent binary of an older version: MESHVPN_OLD_AGENT
// if set, else commit built from this clone's history (git archive, then
// go build with the module cache the main build filled; the go.mod is the
// same). It skips only when the clone lacks the commit (a shallow clone).
func oldAgent(t *testing.T, commit string) string {
	t.Helper()
	if p := os.Getenv("MESHVPN_OLD_AGENT"); p != "" {
		return p
	}
	bins, err := meshlab.FindBins()
	if err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) *exec.Cmd {
		return exec.Command("git", append([]string{"-c", "safe.directory=*", "-C", bins.Root}, args...)...)
	}
	if err := git("cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("commit %.12s is not in this clone (shallow?), and MESHVPN_OLD_AGENT is not set", commit)
	}
	dir := t.TempDir()
	var src, stderr bytes.Buffer
	archive := git("archive", "--format=tar", commit)
	archive.Stdout, archive.Stderr = &src, &stderr
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %.12s: %v %s", commit, err, stderr.Bytes())
	}
	untar := exec.Command("tar", "-x", "-C", dir)
	untar.Stdin = &src
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("untar %.12s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(dir, "meshvpn-old")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meshvpn")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent of %.12s: %v\n%s", commit, err, out)
	}
	return bin
}

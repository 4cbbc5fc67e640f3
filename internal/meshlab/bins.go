// Package meshlab runs meshvpn's real binaries (bin/meshvpn-coordinator,
// bin/meshvpn) inside a natlab lab. The end-to-end tests, the benchmark and
// the demo share it. It speaks to the binaries only through their command
// lines and JSON output, i.e. the contract a user sees.
package meshlab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Module is the module whose go.mod marks the repository root.
const Module = "github.com/meshvpn/meshvpn"

// Bins are the absolute paths of the built binaries.
type Bins struct {
	Root        string // repository root
	Agent       string // bin/meshvpn
	Coordinator string // bin/meshvpn-coordinator
}

// FindBins locates the repository root from the working directory (tests
// run in their package directory) and checks that `make build` has run.
// MESHVPN_BIN overrides the binary directory.
func FindBins() (Bins, error) {
	root, err := repoRoot()
	if err != nil {
		return Bins{}, err
	}
	dir := filepath.Join(root, "bin")
	if d := os.Getenv("MESHVPN_BIN"); d != "" {
		dir = d
	}
	b := Bins{Root: root, Agent: filepath.Join(dir, "meshvpn"), Coordinator: filepath.Join(dir, "meshvpn-coordinator")}
	var missing []string
	for _, p := range []string{b.Agent, b.Coordinator} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("meshlab: missing %s: run make build", strings.Join(missing, ", "))
	}
	return b, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("meshlab: no go.mod of " + Module + " above the working directory")
		}
		dir = parent
	}
}

func isModuleRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(m) == Module
		}
	}
	return false
}

package natlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// ownerDir holds one file per live lab, named after its prefix and holding
// the owning process's PID. /run is a tmpfs, like /run/netns, so both vanish
// together on reboot.
const ownerDir = "/run/natlab"

// labPrefix matches the namespaces this package creates.
var labPrefix = regexp.MustCompile(`^(mv[0-9a-f]{4})-`)

func ownerFile(prefix string) string {
	return filepath.Join(ownerDir, strings.TrimSuffix(prefix, "-")+".pid")
}

func writeOwner(prefix string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("natlab: %w", err)
	}
	if err := os.WriteFile(ownerFile(prefix), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("natlab: %w", err)
	}
	return nil
}

func removeOwner(prefix string) { os.Remove(ownerFile(prefix)) }

// ownerAlive reports whether the process that made the lab still runs.
// Concurrent test binaries (go test ./... runs packages in parallel) each
// own their labs; only labs of dead processes are stale.
func ownerAlive(prefix string) bool {
	data, err := os.ReadFile(ownerFile(prefix))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// CleanupStale deletes the namespaces (and kills the processes in them) of
// labs whose owning process has died, e.g. a test binary killed by a
// timeout. Labs of running processes are left alone.
func CleanupStale(log Logger) error {
	names, err := listNamespaces()
	if err != nil {
		return err
	}
	stale := map[string][]string{}
	for _, ns := range names {
		if m := labPrefix.FindStringSubmatch(ns); m != nil && !ownerAlive(m[1]+"-") {
			stale[m[1]] = append(stale[m[1]], ns)
		}
	}
	// /etc/netns dirs whose namespace is already gone.
	dirs, _ := filepath.Glob(filepath.Join(etcNetns, "mv*-*"))
	for _, d := range dirs {
		if m := labPrefix.FindStringSubmatch(filepath.Base(d)); m != nil && !ownerAlive(m[1]+"-") {
			removeEtc(filepath.Base(d))
		}
	}
	for prefix, nss := range stale {
		log.Logf("natlab: removing %d namespaces left by crashed lab %s", len(nss), prefix)
		for _, ns := range nss {
			deleteNamespace(ns)
		}
		removeOwner(prefix + "-")
	}
	return nil
}

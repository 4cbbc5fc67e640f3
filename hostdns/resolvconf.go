// Package hostdns points the host's DNS at the agent's resolver, in the way
// the system is set up: per-link DNS through systemd-resolved when it
// manages resolv.conf, else resolv.conf rewritten in place, with the
// original kept and restored. See Manager.
package hostdns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// DefaultResolvConf is the file the C library reads.
const DefaultResolvConf = "/etc/resolv.conf"

// backupName is the original resolv.conf's copy in the state dir. While it
// exists, resolv.conf may hold our content: a start after a crash restores
// from it.
const backupName = "resolv.conf.orig"

// marker starts every resolv.conf we write; only a file that still starts
// with it is ever restored over.
const marker = "# Written by meshvpn"

// maxResolvConf bounds what we read of resolv.conf (glibc ignores lines
// past a few kilobytes anyway).
const maxResolvConf = 64 << 10

// Upstreams are the nameservers of a resolv.conf, at most three (glibc's
// MAXNS). A file without any means 127.0.0.1, as for the C library.
func Upstreams(content []byte) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		// An IPv6 address may carry a zone ("fe80::1%eth0").
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		if len(out) < 3 {
			out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
		}
	}
	if len(out) == 0 {
		out = append(out, netip.MustParseAddrPort("127.0.0.1:53"))
	}
	return out
}

// render is the resolv.conf that sends every query to resolver with domain
// searched first; the original's other search domains and its options
// lines are kept.
func render(orig []byte, resolver netip.Addr, domain, backup string) []byte {
	search := []string{domain}
	var keep []string
	sc := bufio.NewScanner(bytes.NewReader(orig))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "search", "domain":
			for _, d := range f[1:] {
				if d = strings.TrimSuffix(d, "."); d != domain && !containsStr(search, d) {
					search = append(search, d)
				}
			}
		case "options", "sortlist":
			keep = append(keep, line)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s while it runs: names of the mesh on its resolver %s.\n", marker, resolver)
	fmt.Fprintf(&b, "# The original file is kept in %s and is put back when meshvpn stops.\n", backup)
	fmt.Fprintf(&b, "# To leave this file alone, run meshvpn up --accept-dns=false.\n")
	fmt.Fprintf(&b, "nameserver %s\n", resolver)
	fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	for _, l := range keep {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readResolvConf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxResolvConf+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxResolvConf {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxResolvConf)
	}
	return b, nil
}

// writeInPlace replaces path's content without replacing the file: it may
// be a bind mount (rename gives EBUSY) or a symlink (rename would replace
// the link). The new content is written over the old, then the rest cut
// off, so a reader never sees an empty file.
func writeInPlace(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(content, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Truncate(int64(len(content))); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeBackup stores the original in the state dir, mode 0600, durably
// before resolv.conf is touched.
func writeBackup(stateDir string, content []byte) error {
	tmp, err := os.CreateTemp(stateDir, backupName+".tmp*")
	if err != nil {
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(stateDir, backupName)); err != nil {
		return fmt.Errorf("back up resolv.conf: %w", err)
	}
	if d, err := os.Open(stateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Restored says what Restore or Recover did.
type Restored int

const (
	NothingToRestore Restored = iota // no backup: resolv.conf was never ours
	RestoredOriginal                 // the original is back, byte for byte
	LeftChanged                      // someone rewrote resolv.conf since; left alone
)

// Recover puts back the original resolv.conf if a run of the agent left
// its own in place (a crash, SIGKILL, power loss), and removes the backup.
// A file that someone else rewrote since is left alone. Call it before
// reading resolv.conf for upstreams.
func Recover(resolvConf, stateDir string) (Restored, error) {
	backup := filepath.Join(stateDir, backupName)
	orig, err := os.ReadFile(backup)
	if errors.Is(err, os.ErrNotExist) {
		return NothingToRestore, nil
	}
	if err != nil {
		return NothingToRestore, fmt.Errorf("read resolv.conf backup: %w", err)
	}
	cur, err := readResolvConf(resolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return NothingToRestore, fmt.Errorf("restore resolv.conf: %w", err)
	}
	res := LeftChanged
	if err == nil && bytes.HasPrefix(cur, []byte(marker)) {
		if err := writeInPlace(resolvConf, orig); err != nil {
			return NothingToRestore, fmt.Errorf("restore resolv.conf: %w", err)
		}
		res = RestoredOriginal
	}
	if err := os.Remove(backup); err != nil {
		return res, fmt.Errorf("remove resolv.conf backup: %w", err)
	}
	return res, nil
}

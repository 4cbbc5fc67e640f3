package hostdns

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var resolver = netip.MustParseAddr("100.100.100.100")

const origConf = "# from DHCP\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 timeout:2\n"

func testManager(t *testing.T, conf string, bus func() (Bus, error)) (*Manager, string, string) {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if bus == nil {
		bus = func() (Bus, error) { return nil, errors.New("no bus in this test") }
	}
	m := NewManager(Config{ResolvConf: path, StateDir: state, Resolver: resolver, IfIndex: 7, Bus: bus,
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	return m, path, state
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestResolvConfApplyRestore(t *testing.T) {
	m, path, state := testManager(t, origConf, nil)
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolvConf {
		t.Fatalf("mode %q", m.Mode())
	}
	got := readFile(t, path)
	for _, want := range []string{"nameserver 100.100.100.100\n", "search mesh.internal corp.example\n", "options edns0 timeout:2\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "192.0.2.53") {
		t.Errorf("resolv.conf still names the original resolver:\n%s", got)
	}
	fi, err := os.Stat(filepath.Join(state, backupName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup: %v %v", fi, err)
	}
	if readFile(t, filepath.Join(state, backupName)) != origConf {
		t.Fatal("backup is not the original")
	}
	// A new domain (coordinator restarted with another) rewrites only the
	// search line; the backup stays the original.
	if err := m.Apply("corp.mesh"); err != nil || !strings.Contains(readFile(t, path), "search corp.mesh corp.example\n") {
		t.Fatalf("new domain: %v\n%s", err, readFile(t, path))
	}
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != origConf {
		t.Fatalf("restored:\n%q\nwant\n%q", got, origConf)
	}
	if _, err := os.Stat(filepath.Join(state, backupName)); !os.IsNotExist(err) {
		t.Fatalf("backup left behind: %v", err)
	}
	if m.Mode() != ModeOff {
		t.Fatalf("mode after restore %q", m.Mode())
	}
}

// resolv.conf as a symlink (NetworkManager, resolvconf): written through
// the link, which stays a link.
func TestResolvConfSymlink(t *testing.T) {
	m, path, _ := testManager(t, "", nil)
	target := filepath.Join(filepath.Dir(path), "run-resolv.conf")
	os.WriteFile(target, []byte(origConf), 0o644)
	os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("resolv.conf is no longer a symlink: %v %v", fi, err)
	}
	if !strings.Contains(readFile(t, target), "nameserver 100.100.100.100") {
		t.Fatal("target not rewritten")
	}
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if readFile(t, target) != origConf {
		t.Fatal("target not restored")
	}
}

// After a crash (no Restore), the next start's Recover puts the original
// back byte for byte.
func TestResolvConfRecoverAfterCrash(t *testing.T) {
	m, path, state := testManager(t, origConf, nil)
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	// The process dies here.
	res, err := Recover(path, state)
	if err != nil || res != RestoredOriginal {
		t.Fatalf("recover: %v %v", res, err)
	}
	if got := readFile(t, path); got != origConf {
		t.Fatalf("recovered %q", got)
	}
	if res, err := Recover(path, state); err != nil || res != NothingToRestore {
		t.Fatalf("second recover: %v %v", res, err)
	}
}

// A file someone else rewrote while we ran (a DHCP client) is theirs: it
// is neither restored over nor backed up as "original" again.
func TestResolvConfChangedMeanwhile(t *testing.T) {
	m, path, state := testManager(t, origConf, nil)
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	dhcp := "nameserver 198.51.100.1\n"
	os.WriteFile(path, []byte(dhcp), 0o644)
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != dhcp {
		t.Fatalf("overwrote a newer file: %q", got)
	}
	if _, err := os.Stat(filepath.Join(state, backupName)); !os.IsNotExist(err) {
		t.Fatal("backup left behind")
	}
}

// Our own file with no backup (lost state dir) is never taken for the
// original.
func TestResolvConfOursWithoutBackup(t *testing.T) {
	m, _, _ := testManager(t, marker+" ...\nnameserver 100.100.100.100\n", nil)
	if err := m.Apply("mesh.internal"); err == nil {
		t.Fatal("accepted our own file as the original")
	}
	if m.Mode() != ModeOff {
		t.Fatalf("mode %q", m.Mode())
	}
}

type call struct {
	method string
	args   []any
}

type fakeBus struct {
	calls  []call
	fail   string // method that fails
	closed bool
}

func (b *fakeBus) Call(method string, args ...any) error {
	b.calls = append(b.calls, call{method, args})
	if method == b.fail {
		return fmt.Errorf("%s: access denied", method)
	}
	return nil
}

func (b *fakeBus) Close() error { b.closed = true; return nil }

func TestResolvedMode(t *testing.T) {
	stub := "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
	bus := &fakeBus{}
	m, path, state := testManager(t, stub, func() (Bus, error) { return bus, nil })
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolved {
		t.Fatalf("mode %q", m.Mode())
	}
	want := []call{
		{"SetLinkDNS", []any{int32(7), []linkDNS{{Family: 2, Address: []byte{100, 100, 100, 100}}}}},
		{"SetLinkDomains", []any{int32(7), []linkDomain{{Domain: "mesh.internal", RoutingOnly: false}}}},
		{"SetLinkDefaultRoute", []any{int32(7), false}},
		{"SetLinkDNSSEC", []any{int32(7), "no"}},
	}
	if !reflect.DeepEqual(bus.calls, want) {
		t.Fatalf("calls:\n%+v\nwant\n%+v", bus.calls, want)
	}
	if readFile(t, path) != stub {
		t.Fatal("resolv.conf was rewritten in resolved mode")
	}
	if _, err := os.Stat(filepath.Join(state, backupName)); !os.IsNotExist(err) {
		t.Fatal("a backup in resolved mode")
	}
	bus.calls = nil
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bus.calls, []call{{"RevertLink", []any{int32(7)}}}) || !bus.closed {
		t.Fatalf("restore calls %+v closed %v", bus.calls, bus.closed)
	}
}

// resolv.conf a symlink to resolved's stub file: resolved mode too.
func TestResolvedDetectedBySymlink(t *testing.T) {
	dir := t.TempDir()
	if resolvedManages(filepath.Join(dir, "missing")) {
		t.Fatal("missing file taken for resolved")
	}
	p := filepath.Join(dir, "resolv.conf")
	os.WriteFile(p, []byte("nameserver 192.0.2.1\n"), 0o644)
	if resolvedManages(p) {
		t.Fatal("plain file taken for resolved")
	}
	os.WriteFile(p, []byte("nameserver 127.0.0.53\n"), 0o644)
	if !resolvedManages(p) {
		t.Fatal("stub address not recognised")
	}
}

// resolved that refuses (no polkit, no bus): resolv.conf mode instead,
// with whatever was set undone.
func TestResolvedRefusedFallsBack(t *testing.T) {
	bus := &fakeBus{fail: "SetLinkDomains"}
	m, path, _ := testManager(t, "nameserver 127.0.0.53\n", func() (Bus, error) { return bus, nil })
	if err := m.Apply("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolvConf || !strings.Contains(readFile(t, path), "nameserver 100.100.100.100") {
		t.Fatalf("mode %q", m.Mode())
	}
	if last := bus.calls[len(bus.calls)-1]; last.method != "RevertLink" || !bus.closed {
		t.Fatalf("half-set link not reverted: %+v", bus.calls)
	}
	m.Restore()
}

// Older resolved without SetLinkDefaultRoute still works.
func TestResolvedOldVersion(t *testing.T) {
	bus := &fakeBus{}
	old := &oldBus{fakeBus: bus}
	m, _, _ := testManager(t, "nameserver 127.0.0.53\n", func() (Bus, error) { return old, nil })
	if err := m.Apply("mesh.internal"); err != nil || m.Mode() != ModeResolved {
		t.Fatalf("%v %q", err, m.Mode())
	}
}

type oldBus struct{ *fakeBus }

func (b *oldBus) Call(method string, args ...any) error {
	if method == "SetLinkDefaultRoute" || method == "SetLinkDNSSEC" {
		return errUnknownMethod
	}
	return b.fakeBus.Call(method, args...)
}

func TestUpstreams(t *testing.T) {
	got := Upstreams([]byte("nameserver 192.0.2.1\n# nameserver 192.0.2.9\nnameserver ::ffff:192.0.2.2\nnameserver bogus\nnameserver 2001:db8::1\nnameserver 192.0.2.4\n"))
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("192.0.2.2:53"), netip.MustParseAddrPort("[2001:db8::1]:53")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := Upstreams(nil); !reflect.DeepEqual(got, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}) {
		t.Errorf("empty file: %v", got)
	}
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// resolvedRootEnv names a directory holding an unpacked systemd-resolved
// package (lib/systemd/systemd-resolved inside); scripts/resolved-for-tests.sh
// makes one at defaultResolvedRoot. The package is unpacked, never
// installed: installing it would point the machine's own /etc/resolv.conf
// at its stub.
const (
	resolvedRootEnv     = "MESHVPN_RESOLVED_ROOT"
	defaultResolvedRoot = "/var/cache/meshvpn-test/systemd-resolved"
)

// resolvedSetup runs in a private mount namespace of a lab host: its own
// /run with a system bus and a real systemd-resolved (as user
// systemd-resolve, from a passwd bind-mounted for it), resolv.conf naming
// the stub, then the command given.
const resolvedSetup = `set -e
D="$1"; R="$2"; shift 2
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd/resolve
chown 990:990 /run/systemd/resolve
mount --bind "$D/passwd" /etc/passwd
mount --bind "$D/group" /etc/group
echo "nameserver 127.0.0.53" > "$D/resolv.conf"
mount --bind "$D/resolv.conf" /etc/resolv.conf
dbus-daemon --config-file="$D/bus.conf" --fork --nopidfile >/dev/null 2>&1
"$R/lib/systemd/systemd-resolved" >"$D/resolved.log" 2>&1 &
i=0
until busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.freedesktop.resolve1 2>/dev/null | grep -q true; do
	i=$((i+1)); [ $i -lt 100 ] || { echo "resolved did not start"; cat "$D/resolved.log"; exit 1; }
	sleep 0.1
done
exec "$@"
`

const resolvedBusConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// TestNamesSystemdResolved checks the systemd-resolved path against the
// real thing: SetLinkDNS and SetLinkDomains on the TUN link make resolved
// send mesh names, and only those, to the agent's resolver; resolv.conf is
// not touched; RevertLink undoes it. Skips where no unpacked resolved is.
func TestNamesSystemdResolved(t *testing.T) {
	root := os.Getenv(resolvedRootEnv)
	if root == "" {
		root = defaultResolvedRoot
	}
	if _, err := os.Stat(filepath.Join(root, "lib/systemd/systemd-resolved")); err != nil {
		t.Skipf("no systemd-resolved under %s (run scripts/resolved-for-tests.sh, or set %s)", root, resolvedRootEnv)
	}
	for _, bin := range []string{"dbus-daemon", "busctl", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s missing", bin)
		}
	}
	lab, _ := newLab(t)
	h, err := lab.AddPublicHost("resolved", "203.0.113.61")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(lab.Dir, "resolved")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"setup.sh": resolvedSetup,
		"bus.conf": resolvedBusConf,
		"passwd":   string(passwd) + "systemd-resolve:x:990:990:systemd Resolver:/:/usr/sbin/nologin\n",
		"group":    string(group) + "systemd-resolve:x:990:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	name, argv, err := toolCommand("resolved-check")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-m", "--propagation", "private", "sh", filepath.Join(dir, "setup.sh"), dir, root, name}, argv...)
	out, err := h.Run(t.Context(), "unshare", args...)
	t.Logf("resolved-check:\n%s", out)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		log, _ := os.ReadFile(filepath.Join(dir, "resolved.log"))
		t.Fatalf("resolved-check: %v\nresolved's log:\n%s", err, log)
	}
}

package natlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Linux capability bits (include/uapi/linux/capability.h).
const (
	capNetAdmin = 12 // interfaces, routes, nftables
	capSysAdmin = 21 // `ip netns add` bind-mounts the namespace file
)

// Check reports why a lab cannot be built on this machine, or nil. The error
// names everything that is missing at once, so one run tells the whole story.
func Check() error {
	var missing []string
	if eff, err := effectiveCaps(); err != nil {
		missing = append(missing, fmt.Sprintf("cannot read capabilities: %v", err))
	} else {
		var caps []string
		if eff&(1<<capNetAdmin) == 0 {
			caps = append(caps, "CAP_NET_ADMIN")
		}
		if eff&(1<<capSysAdmin) == 0 {
			caps = append(caps, "CAP_SYS_ADMIN")
		}
		if len(caps) > 0 {
			missing = append(missing, fmt.Sprintf("needs root (%s; running as uid %d)", strings.Join(caps, ", "), os.Geteuid()))
		}
	}
	for _, tool := range []struct{ cmd, pkg string }{
		{"ip", "iproute2"},
		{"nft", "nftables"},
	} {
		if _, err := exec.LookPath(tool.cmd); err != nil {
			missing = append(missing, fmt.Sprintf("`%s` not found (apt-get install %s)", tool.cmd, tool.pkg))
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// TB is the part of testing.TB that Require needs.
type TB interface {
	Helper()
	Skip(args ...any)
}

// Require skips the test, with a message saying what is missing, when the
// machine cannot build a lab.
func Require(t TB) {
	t.Helper()
	if err := Check(); err != nil {
		t.Skip("natlab: " + err.Error() + "; run sudo make test")
	}
}

// effectiveCaps reads the CapEff mask of this process from /proc.
func effectiveCaps() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

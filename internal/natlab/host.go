package natlab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Host is one network namespace of the lab: a public host, a site's host,
// or a site's router.
type Host struct {
	// Name is the lab-unique name; NS is the namespace (Prefix + Name).
	Name string
	NS   string
	// IP is the host's primary address: public for public hosts and routers
	// (their WAN address), private for hosts behind a NAT.
	IP netip.Addr
	// IP6 is the host's global IPv6 address in a dual-stack lab: public
	// hosts, routers' WAN and hosts of IPv6 sites; invalid otherwise.
	IP6 netip.Addr
	// Site is the site the host belongs to, nil for public hosts.
	Site *Site

	lab *Lab
}

// Command returns a command that runs name inside the host's namespace.
// `ip netns exec` execs the program in place, so the command's PID is the
// program's and signals reach it directly. Setpgid keeps a terminal's Ctrl-C
// away from lab processes: the lab stops them itself, in order.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs a command in the host's namespace to completion and returns its
// stdout. On failure the error includes the exit status and stderr. Every
// run is appended to HOST.run.log in the lab dir.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := h.Command(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	h.logRun(name, args, time.Since(start), stdout.String(), stderr.String(), err)
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (h *Host) logRun(name string, args []string, took time.Duration, stdout, stderr string, err error) {
	f, ferr := os.OpenFile(filepath.Join(h.lab.Dir, h.Name+".run.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if ferr != nil {
		return
	}
	defer f.Close()
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	// Cap each output: status polls would otherwise bury the rest.
	fmt.Fprintf(f, "$ %s %s   # %s, %v\n%s%s", name, strings.Join(args, " "), status, took.Round(time.Millisecond), head(stdout, 40), head(stderr, 40))
}

// Start starts a long-running process in the host's namespace. Its stdout
// and stderr go to a log file in the lab dir (see Proc.Log). The lab stops
// it on Close. To set environment variables, run it through `env`.
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	label := h.Name + "." + filepath.Base(name)
	logPath := filepath.Join(h.lab.Dir, label+".log")
	for i := 2; fileExists(logPath); i++ {
		logPath = filepath.Join(h.lab.Dir, fmt.Sprintf("%s.%d.log", label, i))
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("natlab: %w", err)
	}
	defer f.Close() // the child has its own copy
	cmd := h.Command(context.Background(), name, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	p := &Proc{Name: label, Host: h, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("natlab: %s: start %s: %w", h.Name, name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := h.lab.addProc(p); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return p, nil
}

// WaitTCP waits until something accepts TCP connections on addr
// ("ip:port") as seen from this host, trying for at most timeout.
func (h *Host) WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	// bash's /dev/tcp connects without needing nc or a helper binary.
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", ap.Addr(), ap.Port())
	return Poll(ctx, timeout, 200*time.Millisecond, func() error {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := h.Command(tctx, "bash", "-c", script).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: no TCP listener on %s yet", h.Name, addr)
		}
		return nil
	})
}

// AddAddr adds another address (CIDR) to the host's eth0, e.g. a second
// public address for a STUN server that answers CHANGE-REQUEST.
func (h *Host) AddAddr(cidr string) error {
	return run("ip", "-n", h.NS, "addr", "add", cidr, "dev", "eth0")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Lab returns the lab the host belongs to.
func (h *Host) Lab() *Lab { return h.lab }

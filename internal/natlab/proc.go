package natlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ErrTimeout is returned (wrapped) when a bounded wait runs out.
var ErrTimeout = errors.New("timed out")

// Proc is a process started with Host.Start.
type Proc struct {
	// Name is "HOST.PROGRAM", used in log dumps.
	Name    string
	Host    *Host
	Cmd     *exec.Cmd
	LogPath string

	done chan struct{}
	err  error // from Cmd.Wait, valid after done is closed
}

// Signal sends sig to the process if it still runs.
func (p *Proc) Signal(sig syscall.Signal) {
	if !p.Exited() {
		p.Cmd.Process.Signal(sig)
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits at most timeout for the process to end and returns its exit
// error (nil for status 0), or an error wrapping ErrTimeout.
func (p *Proc) Wait(timeout time.Duration) error {
	// Check first: with a zero timeout, select would pick at random
	// between an ended process and an expired timer.
	if p.Exited() {
		return p.err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s still running after %v: %w", p.Name, timeout, ErrTimeout)
	}
}

// State describes how the process ended ("exit status 1", "signal:
// killed"), or "running".
func (p *Proc) State() string {
	if !p.Exited() {
		return "running"
	}
	return p.Cmd.ProcessState.String()
}

// ExitCode is the exit status, or -1 while running or when killed by a signal.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM and waits up to timeout; a process still running then
// is killed. It returns the exit error of a clean stop (nil for status 0).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.err
	}
	p.Signal(syscall.SIGTERM)
	err := p.Wait(timeout)
	if errors.Is(err, ErrTimeout) {
		p.Cmd.Process.Kill()
		p.Wait(5 * time.Second)
		return fmt.Errorf("%s ignored SIGTERM for %v and was killed", p.Name, timeout)
	}
	return err
}

// Log returns everything the process wrote so far.
func (p *Proc) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(data)
}

// WaitLog waits at most timeout until the log contains substr. It gives up
// early when the process exits without writing it.
func (p *Proc) WaitLog(substr string, timeout time.Duration) error {
	return Poll(context.Background(), timeout, 100*time.Millisecond, func() error {
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		if p.Exited() {
			if strings.Contains(p.Log(), substr) {
				return nil
			}
			return Fatal(fmt.Errorf("%s exited (%v) without logging %q", p.Name, p.err, substr))
		}
		return fmt.Errorf("%s has not logged %q", p.Name, substr)
	})
}

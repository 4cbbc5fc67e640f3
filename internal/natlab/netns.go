package natlab

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that entered the host's network namespace.
// Sockets fn opens belong to that namespace and stay there after fn
// returns, so a test can play a lab host from its own process (e.g. a TURN
// client with pion's library) without a helper binary. The thread is never
// handed back to the Go scheduler: the goroutine ends locked, and the
// runtime then ends the thread, so no other goroutine runs in the lab by
// accident.
//
// The process's main thread must never enter: `ip netns pids` (and the
// lab's cleanup, which kills those) goes by it. A goroutine that finds
// itself locked to the main thread starts the work on another goroutine,
// which cannot run there while it holds the main thread, and waits.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done := make(chan struct{})
			go func() { defer close(done); run() }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		f, err := os.Open(filepath.Join("/run/netns", h.NS))
		if err != nil {
			errc <- fmt.Errorf("natlab: %s: %w", h.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("natlab: enter namespace %s: %w", h.NS, err)
			return
		}
		errc <- fn()
	}
	go run()
	return <-errc
}

package natlab

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialContext opens a connection from inside the host's namespace, for
// clients a test runs in its own process (a raw stream client, say). The
// socket is made on a thread switched into the namespace and keeps that
// namespace after the thread switches back. addr must be an IP literal: a
// name lookup could run on another thread.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := h.dialInNS(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (h *Host) dialInNS(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("natlab: dial from %s: %w", h.Name, err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + h.NS)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("natlab: dial from %s: %w", h.Name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("natlab: dial from %s: setns: %w", h.Name, err)
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	// A thread that cannot go back stays locked, so the runtime retires it
	// with this goroutine instead of reusing it in the lab's namespace.
	if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	if err != nil {
		return nil, fmt.Errorf("natlab: dial %s from %s: %w", addr, h.Name, err)
	}
	return c, nil
}

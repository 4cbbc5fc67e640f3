package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// LockFile in the state directory is held exclusively by a serving
// coordinator and shared by admin commands that write the store directly.
// It is how an admin command knows whether a server runs (and must be asked
// through its admin socket), and it keeps a server from starting half-way
// through such a direct write.
const LockFile = "serve.lock"

// lockWait bounds how long a starting server waits for admin commands that
// hold the lock.
var lockWait = 10 * time.Second

// lockServe takes the state dir's lock for a server.
func lockServe(dir string) (*os.File, error) {
	f, err := openLock(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("state dir %s is in use by another running coordinator", dir)
			}
			return nil, fmt.Errorf("lock state dir: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockShared takes the lock for an admin command if no server holds it; ok
// is false when a server runs.
func lockShared(dir string) (f *os.File, ok bool, err error) {
	f, err = openLock(dir)
	if err != nil {
		return nil, false, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, false, nil
	}
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("lock state dir: %w", err)
	}
	return f, true, nil
}

func openLock(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}

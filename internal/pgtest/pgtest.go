// Package pgtest runs a throwaway PostgreSQL cluster for tests: initdb in a
// temporary directory, run as the postgres user (PostgreSQL refuses root),
// listening on one address and a free port. Tests skip only when the
// server's binaries are missing (Debian package postgresql).
package pgtest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// User is the cluster's superuser; it needs no password from the
// addresses the cluster trusts.
const User = "meshvpn"

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	Host string // the address it listens on
	Port int
	dir  string
	n    atomic.Int64
	// pgctl runs pg_ctl with the cluster's data directory and options.
	pgctl func(args ...string) error
}

// binDir finds the newest installed server's binaries.
func binDir() (string, bool) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", false
	}
	sort.Slice(m, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[i]))))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[j]))))
		return a < b
	})
	return filepath.Dir(m[len(m)-1]), true
}

// ErrNoServer means the PostgreSQL server binaries are not installed.
var ErrNoServer = errors.New("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; Debian package postgresql)")

// Start starts a cluster on host (an IP address this machine has) and a
// free port, trusting connections from loopback and from trust (CIDR
// prefixes, e.g. a lab's). run, when not nil, makes the commands (say, to
// run them in a network namespace); it gets an argv to run as given. The
// cluster is stopped when t ends.
func Start(t testing.TB, host string, trust []string, run func(argv []string) *exec.Cmd) *Cluster {
	t.Helper()
	c, err := StartCluster(host, trust, run)
	if errors.Is(err, ErrNoServer) {
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("pgtest: %v", err)
		}
	})
	return c
}

// StartCluster is Start for a program that is not a test (a benchmark):
// the caller stops the cluster with Stop.
func StartCluster(host string, trust []string, run func(argv []string) *exec.Cmd) (*Cluster, error) {
	bin, ok := binDir()
	if !ok {
		return nil, ErrNoServer
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: user postgres: %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	if run == nil {
		run = func(argv []string) *exec.Cmd { return exec.Command(argv[0], argv[1:]...) }
	}
	exe := func(argv ...string) error {
		// runuser rather than a Credential on the command: run may wrap
		// argv in something that needs root (ip netns exec).
		cmd := run(append([]string{"runuser", "-u", "postgres", "--"}, argv...))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, lastLines(out.Bytes()))
		}
		return nil
	}

	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// The postgres user must reach dir: MkdirTemp makes it 0700 and root's.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fail(err)
	}
	port, err := freePort(host)
	if err != nil {
		return fail(err)
	}
	c := &Cluster{Host: host, Port: port, dir: dir}
	data := filepath.Join(dir, "data")
	if err := exe(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", User, "-E", "UTF8", "--no-sync"); err != nil {
		return fail(err)
	}
	hba := "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
	for _, p := range trust {
		hba += "host all all " + p + " trust\n"
	}
	if err := appendFile(filepath.Join(data, "pg_hba.conf"), hba); err != nil {
		return fail(err)
	}
	opts := fmt.Sprintf("-c listen_addresses=%s -p %d -k %s -c fsync=off -c full_page_writes=off", host, c.Port, dir)
	c.pgctl = func(args ...string) error {
		return exe(append([]string{filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60"}, args...)...)
	}
	if err := c.pgctl("start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return fail(fmt.Errorf("%w; server log: %s", err, lastLines(log)))
	}
	return c, nil
}

// Stop stops the server at once and removes its files.
func (c *Cluster) Stop() error {
	err := c.pgctl("-m", "immediate", "stop")
	os.RemoveAll(c.dir)
	return err
}

// Restart stops the server at once (as a crash would: open connections
// break) and starts it again.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if err := c.pgctl("-m", "immediate", "restart"); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

// URL is the libpq URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", User, net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), db)
}

// NewDB creates an empty database and returns its URL.
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	url, err := c.CreateDB()
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// CreateDB creates an empty database and returns its URL.
func (c *Cluster) CreateDB() (string, error) {
	name := fmt.Sprintf("t%d", c.n.Add(1))
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database: %w", err)
	}
	return c.URL(name), nil
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		// host may live in a namespace this process is not in: any free
		// port here is as good a guess.
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lastLines keeps the end of a command's output for an error message.
func lastLines(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}

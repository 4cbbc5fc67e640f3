// Command loadgen runs the coordinator scale benchmark (make
// bench-coordinator): N simulated agents against a real coordinator process
// on loopback. It reports figures; it never fails on them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshvpn/meshvpn/internal/loadgen"
)

func main() {
	var cfg loadgen.Config
	flag.StringVar(&cfg.Coordinator, "coordinator", "bin/meshvpn-coordinator", "meshvpn-coordinator `binary` to measure")
	flag.IntVar(&cfg.N, "n", 1000, "`number` of simulated agents")
	flag.IntVar(&cfg.Workers, "workers", 32, "registrations and stream dials in flight at once")
	flag.DurationVar(&cfg.ProbeTimeout, "probe-timeout", 30*time.Second, "how long one change may take to reach every agent")
	flag.DurationVar(&cfg.SetupTimeout, "setup-timeout", 10*time.Minute, "bound on registering and connecting all agents")
	flag.BoolVar(&cfg.Policy, "policy", false, "install an access policy of 50 groups and 500 rules first, and time a policy change")
	flag.IntVar(&cfg.Replicas, "replicas", 1, "`number` of coordinator replicas on one store (more than 1 needs -store postgres); agents are spread over them")
	flag.IntVar(&cfg.First, "first", 0, "with replicas, `number` of agents on replica 0 (the one the storms restart), the rest spread over the others; 0: all evenly")
	flag.StringVar(&cfg.Store, "store", "", "`store`: empty for SQLite, or postgres (a throwaway cluster on loopback, Debian package postgresql)")
	asJSON := flag.Bool("json", false, "print the result as JSON instead of a table")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, `usage: loadgen [flags]

Starts the coordinator binary on 127.0.0.1 with a fresh state directory,
registers N simulated agents over the HTTP API (one reusable auth key,
parallel workers), holds their WebSocket streams (no TUN, no WireGuard), then
times how long a join, a node coming online, going offline and (where the
build has 'nodes remove') a removal take to reach all N agents. Reports the
coordinator's RSS and CPU from /proc and the full netmap size.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.Log = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(b))
		return
	}
	res.Print(os.Stdout)
}

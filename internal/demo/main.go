// Command demo shows meshvpn end to end in a throw-away NAT lab: a
// coordinator on the lab's internet, a "laptop", a "server" and a "nas"
// behind three NATs, their status, pings and an ssh login across the
// overlay. With the default NATs the laptop reaches the server directly and
// the nas (symmetric NAT on both sides) through the coordinator's TURN relay.
// Run it as root from the repository root after `make build`:
//
//	make demo            # or: go run ./internal/demo -nat1 symmetric -nat2 restrictedcone
//
// Everything lives in network namespaces that are deleted at the end, also
// on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

type printLogger struct{}

func (printLogger) Logf(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

func main() {
	nat1 := flag.String("nat1", "symmetric", "NAT in front of the laptop: public, fullcone, restrictedcone, portrestricted, symmetric")
	nat2 := flag.String("nat2", "restrictedcone", "NAT in front of the server (same choices)")
	nat3 := flag.String("nat3", "symmetric", "NAT in front of the nas (same choices, and udpblocked)")
	flag.Parse()
	var kinds [3]natlab.Kind
	var err error
	for i, n := range []string{*nat1, *nat2, *nat3} {
		if kinds[i], err = natlab.ParseKind(n); err != nil {
			break
		}
	}
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, kinds)
		stop()
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo: interrupted; the lab has been removed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// show prints a command's output indented, or its error.
func show(out string, err error) {
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("    " + line)
	}
	if err != nil {
		fmt.Println("    !! " + err.Error())
	}
}

func run(ctx context.Context, kinds [3]natlab.Kind) (err error) {
	if err := natlab.Check(); err != nil {
		return fmt.Errorf("%w; run sudo make demo", err)
	}
	bins, err := meshlab.FindBins()
	if err != nil {
		return err
	}
	step("Building the NAT lab (network namespaces + nftables)")
	lab, err := natlab.New(printLogger{})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			fmt.Println("\nSomething failed; process logs follow.")
			lab.DumpLogs()
		}
		step("Cleaning up: stopping processes, deleting namespaces")
		lab.Close()
	}()
	coord, err := meshlab.StartCoordinator(ctx, lab, bins)
	if err != nil {
		return err
	}
	var agents []*meshlab.Agent
	for _, s := range []struct {
		name string
		kind natlab.Kind
	}{{"laptop", kinds[0]}, {"server", kinds[1]}, {"nas", kinds[2]}} {
		site, err := lab.AddSite(s.name, s.kind)
		if err != nil {
			return err
		}
		a, err := meshlab.NewAgent(coord, site.Host, s.name)
		if err != nil {
			return err
		}
		agents = append(agents, a)
		where := "public address " + site.Host.IP.String()
		if site.Router != nil {
			where = fmt.Sprintf("%s behind a %s NAT (public %s)", site.Host.IP, s.kind, site.PublicIP())
		}
		fmt.Printf("    %-7s %s\n", s.name, where)
	}
	fmt.Printf("    coord   %s (meshvpn-coordinator: API :8080, STUN and TURN :3478)\n", meshlab.CoordinatorIP)
	laptop, server := agents[0], agents[1]

	step("Creating an auth key and starting the agents")
	key, err := coord.AuthKey(ctx, true)
	if err != nil {
		return err
	}
	for _, a := range agents {
		if err := a.Up(ctx, key, 30*time.Second); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := meshlab.WaitOnline(ctx, agents, 60*time.Second); err != nil {
		return err
	}
	fmt.Printf("    all agents see each other online after %v\n", time.Since(start).Round(time.Millisecond))
	for _, peer := range agents[1:] {
		path, err := meshlab.WaitConnected(ctx, laptop, peer.Name, 30*time.Second)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil:
			fmt.Printf("    no path between laptop and %s (%v)\n", peer.Name, err)
		case path.Relay != nil:
			fmt.Printf("    path laptop -> %s: relay via %s over %s (%s)\n", peer.Name, path.Relay.Server, path.Relay.Transport, path.Reason)
		default:
			fmt.Printf("    path laptop -> %s: %s (%s -> %s, endpoint %s)\n", peer.Name, path.Path, path.LocalType, path.RemoteType, path.Endpoint)
		}
	}

	for _, a := range agents {
		step("meshvpn status on %s", a.Name)
		show(a.Host.Run(ctx, bins.Agent, "status", "--socket", a.Socket))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	st, err := server.Status(ctx)
	if err != nil {
		return err
	}
	for _, peer := range agents[1:] {
		step("meshvpn ping %s -c 3 (from laptop)", peer.Name)
		out, err := laptop.Ping(ctx, peer.Name, 3)
		show(out, err)
		if err != nil && peer == server {
			step("Skipping ssh: the overlay carries no traffic between laptop and server")
			return ctx.Err()
		}
	}

	step("ssh root@%s over the overlay (sshd runs in the server's namespace)", st.Self.IP)
	sshd, err := meshlab.StartSSHD(ctx, server.Host, filepath.Join(lab.Dir, "sshd"))
	if err != nil {
		return err
	}
	show(sshd.Run(ctx, laptop.Host, st.Self.IP,
		`echo "remote namespace: $(ip netns identify)"; echo "SSH_CONNECTION: $SSH_CONNECTION"; ip -4 -brief addr show meshvpn0`))
	return ctx.Err()
}

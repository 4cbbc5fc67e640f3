package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/relay"
)

const usageAbout = `Lists relay usage per node and relay: the bytes and packets a relay passed
to the node from its peers (IN) and from the node to its peers (OUT). Bytes
are the relayed UDP payloads (WireGuard packets), without TURN framing.

The embedded relay and the peer relays count; an external TURN server
(--turn-url) reports nothing and shows n/a. The running "serve" (asked
through its admin socket) counts its own relays live in memory, and every
coordinator copies its counts to the store every 15 s: the answer also has
the relays of the other replicas on a PostgreSQL store (each replica's
embedded relay shows as embedded@REPLICA) and of this coordinator's earlier
runs, as far as the store keeps them (24h). Totals since the asked "serve"
started, or with --since the last DUR, rounded out to whole minutes within
the last hour and whole hours before (at most 24h back).`

func runUsage(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usage", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	since := fs.Duration("since", 0, "count only the last `DUR` (e.g. 30m, 2h); default: since the coordinator started")
	asJSON := fs.Bool("json", false, "print a JSON object instead of a table")
	if err := parseFlags(fs, usageAbout, args, stdout, stderr); err != nil {
		return err
	}
	if *since < 0 || *since > relay.UsageHistory {
		fmt.Fprintf(stderr, "meshvpn-coordinator usage: --since %s: want a duration from 1s to %s\n", *since, relay.UsageHistory)
		return errUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := coordinator.RequireState(*stateDir, ""); err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	admin, err := coordinator.OpenAdmin(ctx, *stateDir)
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	defer admin.Close()
	rep, err := admin.RelayUsage(ctx, *since)
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	fmt.Fprintf(stdout, "relay usage from %s to %s\n", rep.From.UTC().Format(time.RFC3339), rep.To.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRELAY\tBYTES IN\tPACKETS IN\tBYTES OUT\tPACKETS OUT")
	for _, r := range rep.Rows {
		node := r.Node
		if node == "" {
			node = fmt.Sprintf("(left) %d", r.NodeID)
		}
		name := r.Relay
		if r.Replica != "" {
			name += "@" + r.Replica
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", node, name, count(r.BytesIn), count(r.PacketsIn), count(r.BytesOut), count(r.PacketsOut))
	}
	return tw.Flush()
}

// count prints a reported count, or n/a for a relay that reports nothing.
func count(v *uint64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprint(*v)
}

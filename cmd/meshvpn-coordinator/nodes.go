package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
)

const nodesAbout = `Lists the nodes of the mesh: name, overlay IP, whether its agent is connected
to the running coordinator, and when it was last seen.`

// nodeJSON is one node of "nodes list --json". last_seen is null for a node
// that never connected.
type nodeJSON struct {
	ID        uint64     `json:"id"`
	Name      string     `json:"name"`
	IP        string     `json:"ip"`
	PublicKey string     `json:"public_key"`
	Online    bool       `json:"online"`
	LastSeen  *time.Time `json:"last_seen"`
}

func runNodesList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nodes list", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	if err := parseFlags(fs, nodesAbout, args, stdout, stderr); err != nil {
		return err
	}

	store, err := coordinator.OpenStore(*stateDir)
	if err != nil {
		return fmt.Errorf("nodes list: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := store.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("nodes list: %w", err)
	}

	if *asJSON {
		out := make([]nodeJSON, 0, len(nodes))
		for _, n := range nodes {
			j := nodeJSON{ID: n.ID, Name: n.Name, IP: n.IP, PublicKey: n.PublicKey, Online: n.Online}
			if !n.LastSeen.IsZero() {
				j.LastSeen = &n.LastSeen
			}
			out = append(out, j)
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return fmt.Errorf("nodes list: %w", err)
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tIP\tONLINE\tLAST SEEN")
	for _, n := range nodes {
		online := "no"
		if n.Online {
			online = "yes"
		}
		seen := "never"
		if !n.LastSeen.IsZero() {
			seen = n.LastSeen.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", n.ID, n.Name, n.IP, online, seen)
	}
	return tw.Flush()
}

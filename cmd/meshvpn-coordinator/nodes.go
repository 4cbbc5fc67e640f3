package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
)

const nodesAbout = `Lists the nodes of the mesh: name, overlay IPs (IPv4 and IPv6), whether its agent is connected
to the running coordinator, when it was last seen, its tags, and whether it
is ephemeral or expired.`

// nodeJSON is one node of the nodes commands' --json output. last_seen is
// null for a node that never connected, expired_at for one not expired.
type nodeJSON struct {
	ID        uint64     `json:"id"`
	Name      string     `json:"name"`
	IP        string     `json:"ip"`
	IP6       string     `json:"ip6"`
	PublicKey string     `json:"public_key"`
	Online    bool       `json:"online"`
	LastSeen  *time.Time `json:"last_seen"`
	Tags      []string   `json:"tags"`
	Ephemeral bool       `json:"ephemeral"`
	Expired   bool       `json:"expired"`
	ExpiredAt *time.Time `json:"expired_at"`
	CreatedAt time.Time  `json:"created_at"`
}

func toNodeJSON(r coordinator.NodeRecord) nodeJSON {
	j := nodeJSON{ID: r.ID, Name: r.Name, IP: r.IP, IP6: r.IP6, PublicKey: r.PublicKey, Online: r.Online,
		Tags: r.Tags, Ephemeral: r.Ephemeral, Expired: r.Expired(), CreatedAt: r.CreatedAt}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if !r.LastSeen.IsZero() {
		j.LastSeen = &r.LastSeen
	}
	if r.Expired() {
		j.ExpiredAt = &r.ExpiredAt
	}
	return j
}

func runNodesList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nodes list", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	openStore := storeOpener(fs, stateDir, true)
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	if err := parseFlags(fs, nodesAbout, args, stdout, stderr); err != nil {
		return err
	}

	store, err := openStore()
	if err != nil {
		return fmt.Errorf("nodes list: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := store.NodeRecords(ctx)
	if err != nil {
		return fmt.Errorf("nodes list: %w", err)
	}

	if *asJSON {
		out := make([]nodeJSON, 0, len(nodes))
		for _, n := range nodes {
			out = append(out, toNodeJSON(n))
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tIP\tIPV6\tONLINE\tLAST SEEN\tTAGS\tFLAGS")
	for _, n := range nodes {
		online := "no"
		if n.Online {
			online = "yes"
		}
		seen := "never"
		if !n.LastSeen.IsZero() {
			seen = n.LastSeen.Format(time.RFC3339)
		}
		var flags []string
		if n.Ephemeral {
			flags = append(flags, "ephemeral")
		}
		if n.Expired() {
			flags = append(flags, "expired")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.Name, n.IP, dashEmpty(n.IP6), online, seen,
			dashEmpty(strings.Join(n.Tags, ",")), dashEmpty(strings.Join(flags, ",")))
	}
	return tw.Flush()
}

const nodesRemoveAbout = `Removes a node from the mesh. NODE is its ID, name or overlay IP (a number is
an ID). Every connected agent drops it from its WireGuard configuration at
once, its own stream is closed, and its credential is refused from then on
("node removed"); it can join again only with an auth key, as a new node.
While "serve" runs on --state the change goes through its admin socket
(admin.sock); otherwise it is written to the store.`

const nodesExpireAbout = `Expires a node's credential now (on the coordinator's clock). Peers drop it
at once and its stream is closed, as for "remove", but the node stays listed
with its name and address: its agent is refused ("node expired") until it
joins again with an auth key, and then gets its old name and address back.
NODE is its ID, name or overlay IP.`

const nodesRenameAbout = `Renames a node; its peers see the new name at once. NODE is its ID, name or
overlay IP; NEW-NAME must be a DNS label (lowercase letters, digits, '-') not
used by another node.`

func runNodesRemove(args []string, stdout, stderr io.Writer) error {
	return runNodeChange("nodes remove", "NODE", nodesRemoveAbout, 1, args, stdout, stderr,
		func(ctx context.Context, a *coordinator.Admin, pos []string) (coordinator.NodeRecord, string, error) {
			r, err := a.RemoveNode(ctx, pos[0])
			return r, fmt.Sprintf("removed node %d (%s, %s)", r.ID, r.Name, r.IP), err
		})
}

func runNodesExpire(args []string, stdout, stderr io.Writer) error {
	return runNodeChange("nodes expire", "NODE", nodesExpireAbout, 1, args, stdout, stderr,
		func(ctx context.Context, a *coordinator.Admin, pos []string) (coordinator.NodeRecord, string, error) {
			r, err := a.ExpireNode(ctx, pos[0])
			return r, fmt.Sprintf("expired node %d (%s, %s)", r.ID, r.Name, r.IP), err
		})
}

func runNodesRename(args []string, stdout, stderr io.Writer) error {
	return runNodeChange("nodes rename", "NODE NEW-NAME", nodesRenameAbout, 2, args, stdout, stderr,
		func(ctx context.Context, a *coordinator.Admin, pos []string) (coordinator.NodeRecord, string, error) {
			r, err := a.RenameNode(ctx, pos[0], pos[1])
			return r, fmt.Sprintf("node %d is now %s", r.ID, r.Name), err
		})
}

// runNodeChange is the common body of the commands that change one node.
func runNodeChange(name, argsUsage, about string, nargs int, args []string, stdout, stderr io.Writer,
	change func(context.Context, *coordinator.Admin, []string) (coordinator.NodeRecord, string, error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	asJSON := fs.Bool("json", false, "print the node as a JSON object")
	storeName := storeFlags(fs)
	pos, err := parseFlagsArgs(fs, argsUsage, about, nargs, args, stdout, stderr)
	if err != nil {
		return err
	}
	store, err := storeName()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := coordinator.RequireState(*stateDir, store); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	admin, err := coordinator.OpenAdminStore(ctx, *stateDir, store)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer admin.Close()
	r, msg, err := change(ctx, admin, pos)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	via := "store"
	if admin.Live() {
		via = "server"
	}
	if *asJSON {
		return printJSON(stdout, struct {
			nodeJSON
			Via string `json:"via"`
		}{toNodeJSON(r), via})
	}
	if admin.Live() {
		msg += "; connected agents were told"
	} else {
		msg += " in the store (no coordinator is running on it)"
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func dashEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

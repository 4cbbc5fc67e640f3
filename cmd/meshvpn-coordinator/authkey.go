package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
)

const authKeyAbout = `Creates an auth key and prints it as the last line of stdout (with --json, a
JSON object with the key under "key"). A node registers once with the key and
gets a credential it uses from then on. Keys are stored hashed: the key is
shown only now. Expiry is judged on the coordinator's clock only. Safe to run
while "serve" uses the same --state.`

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// keyJSON is one key in the authkey commands' --json output.
type keyJSON struct {
	ID        int64      `json:"id"`
	Key       string     `json:"key,omitempty"`
	Reusable  bool       `json:"reusable"`
	Ephemeral bool       `json:"ephemeral"`
	Tags      []string   `json:"tags"`
	MaxUses   *int64     `json:"max_uses,omitempty"`
	ExpiresAt *time.Time `json:"expires_at"`
	CreatedAt time.Time  `json:"created_at"`
	Uses      *int64     `json:"uses,omitempty"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	State     string     `json:"state,omitempty"`
}

func toKeyJSON(k coordinator.AuthKey) keyJSON {
	j := keyJSON{ID: k.ID, Reusable: k.Reusable, Ephemeral: k.Ephemeral, Tags: k.Tags, CreatedAt: k.CreatedAt}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if !k.ExpiresAt.IsZero() {
		j.ExpiresAt = &k.ExpiresAt
	}
	if k.MaxUses > 0 {
		j.MaxUses = &k.MaxUses
	}
	return j
}

func runAuthKeyCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("authkey create", flag.ContinueOnError)
	reusable := fs.Bool("reusable", false, "the key may admit any number of nodes (default: one)")
	maxUses := fs.Int64("max-uses", 0, "the key admits at most `n` registrations (implies --reusable when above 1); 0: no cap")
	ephemeral := fs.Bool("ephemeral", false, "nodes it admits are removed once offline for serve's --ephemeral-timeout")
	var tags stringList
	fs.Var(&tags, "tag", "`tag` given to every node the key admits (repeatable; lowercase letters, digits, - _ : .)")
	expiry := fs.Duration("expiry", time.Hour, "lifetime of the key as a Go `duration` (e.g. 30m, 24h); 0 means it never expires")
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	openStore := storeOpener(fs, stateDir, false)
	asJSON := fs.Bool("json", false, "print a JSON object instead of the bare key")
	if err := parseFlags(fs, authKeyAbout, args, stdout, stderr); err != nil {
		return err
	}
	if *expiry < 0 {
		fmt.Fprintf(stderr, "meshvpn-coordinator authkey create: --expiry must not be negative (got %v)\n", *expiry)
		return errUsage
	}
	if *maxUses < 0 {
		fmt.Fprintf(stderr, "meshvpn-coordinator authkey create: --max-uses must not be negative (got %d)\n", *maxUses)
		return errUsage
	}
	normTags, err := coordinator.NormalizeTags(tags)
	if err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator authkey create: --tag: %v\n", err)
		return errUsage
	}

	store, err := openStore()
	if err != nil {
		return fmt.Errorf("authkey create: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := store.CreateAuthKeyWith(ctx, coordinator.AuthKeyOptions{
		Reusable: *reusable, Ephemeral: *ephemeral, Expiry: *expiry, Tags: normTags, MaxUses: *maxUses,
	})
	if err != nil {
		return fmt.Errorf("authkey create: %w", err)
	}

	if *asJSON {
		out := toKeyJSON(k.AuthKey)
		out.Key = k.Key
		// One line, so the key's object is the last line like the bare key.
		b, err := json.Marshal(out)
		if err != nil {
			return fmt.Errorf("authkey create: %w", err)
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	// The description goes to stderr so that KEY=$(... authkey create) gets
	// only the key.
	fmt.Fprintf(stderr, "created %s auth key %d (%s)\n", keyKind(k.AuthKey), k.ID, keyExpires(k.AuthKey))
	fmt.Fprintln(stdout, k.Key)
	return nil
}

func keyKind(k coordinator.AuthKey) string {
	kind := "single-use"
	if k.Reusable {
		kind = "reusable"
	}
	if k.Ephemeral {
		kind += " ephemeral"
	}
	if k.MaxUses > 0 {
		kind += fmt.Sprintf(" (at most %d uses)", k.MaxUses)
	}
	if len(k.Tags) > 0 {
		kind += " tagged " + strings.Join(k.Tags, ",")
	}
	return kind
}

func keyExpires(k coordinator.AuthKey) string {
	if k.ExpiresAt.IsZero() {
		return "never expires"
	}
	return "expires " + k.ExpiresAt.Format(time.RFC3339)
}

const authKeyListAbout = `Lists the auth keys: ID, kind (reusable, ephemeral), tags, uses (USES/MAX for
keys created with --max-uses), expiry and state (valid, used, expired,
revoked; judged on this machine's clock, which is the coordinator's when run
on its host). The keys themselves are not stored and cannot be shown again.`

func runAuthKeyList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("authkey list", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	openStore := storeOpener(fs, stateDir, true)
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	if err := parseFlags(fs, authKeyListAbout, args, stdout, stderr); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return fmt.Errorf("authkey list: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := store.ListAuthKeys(ctx)
	if err != nil {
		return fmt.Errorf("authkey list: %w", err)
	}
	now := store.Now()
	if *asJSON {
		out := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			j := toKeyJSON(k.AuthKey)
			j.Uses = &k.Uses
			if !k.UsedAt.IsZero() {
				j.UsedAt = &k.UsedAt
			}
			if !k.RevokedAt.IsZero() {
				j.RevokedAt = &k.RevokedAt
			}
			j.State = k.State(now)
			out = append(out, j)
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tTAGS\tUSES\tCREATED\tEXPIRES\tSTATE")
	for _, k := range keys {
		kind := "single-use"
		if k.Reusable {
			kind = "reusable"
		}
		if k.Ephemeral {
			kind += ",ephemeral"
		}
		expires := "never"
		if !k.ExpiresAt.IsZero() {
			expires = k.ExpiresAt.Format(time.RFC3339)
		}
		uses := strconv.FormatInt(k.Uses, 10)
		if k.MaxUses > 0 {
			uses += "/" + strconv.FormatInt(k.MaxUses, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, kind, dashEmpty(strings.Join(k.Tags, ",")), uses,
			k.CreatedAt.Format(time.RFC3339), expires, k.State(now))
	}
	return tw.Flush()
}

const authKeyRevokeAbout = `Revokes the auth key with this ID (see "authkey list"): from now on it admits
no node ("auth key revoked"). Nodes it already admitted stay; remove them with
"nodes remove" if they must go too.`

func runAuthKeyRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("authkey revoke", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	openStore := storeOpener(fs, stateDir, true)
	asJSON := fs.Bool("json", false, "print a JSON object")
	pos, err := parseFlagsArgs(fs, "ID", authKeyRevokeAbout, 1, args, stdout, stderr)
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		fmt.Fprintf(stderr, "meshvpn-coordinator authkey revoke: %q is not a key ID (see \"authkey list\")\n", pos[0])
		return errUsage
	}
	store, err := openStore()
	if err != nil {
		return fmt.Errorf("authkey revoke: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.RevokeAuthKey(ctx, id); err != nil {
		return fmt.Errorf("authkey revoke: %w", err)
	}
	if *asJSON {
		return printJSON(stdout, struct {
			ID      int64 `json:"id"`
			Revoked bool  `json:"revoked"`
		}{id, true})
	}
	fmt.Fprintf(stdout, "revoked auth key %d\n", id)
	return nil
}

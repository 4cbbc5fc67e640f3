package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
)

const authKeyAbout = `Creates an auth key and prints it as the last line of stdout (with --json, a
JSON object with the key under "key"). A node registers once with the key and
gets a credential it uses from then on. Keys are stored hashed: the key is
shown only now. Safe to run while "serve" uses the same --state.`

func runAuthKeyCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("authkey create", flag.ContinueOnError)
	reusable := fs.Bool("reusable", false, "the key may admit any number of nodes (default: one)")
	expiry := fs.Duration("expiry", time.Hour, "lifetime of the key as a Go `duration` (e.g. 30m, 24h); 0 means it never expires")
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	asJSON := fs.Bool("json", false, "print a JSON object instead of the bare key")
	if err := parseFlags(fs, authKeyAbout, args, stdout, stderr); err != nil {
		return err
	}
	if *expiry < 0 {
		fmt.Fprintf(stderr, "meshvpn-coordinator authkey create: --expiry must not be negative (got %v)\n", *expiry)
		return errUsage
	}

	store, err := coordinator.OpenStore(*stateDir)
	if err != nil {
		return fmt.Errorf("authkey create: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := store.CreateAuthKey(ctx, *reusable, *expiry)
	if err != nil {
		return fmt.Errorf("authkey create: %w", err)
	}

	if *asJSON {
		out := struct {
			ID        int64      `json:"id"`
			Key       string     `json:"key"`
			Reusable  bool       `json:"reusable"`
			ExpiresAt *time.Time `json:"expires_at"`
			CreatedAt time.Time  `json:"created_at"`
		}{ID: k.ID, Key: k.Key, Reusable: k.Reusable, CreatedAt: k.CreatedAt}
		if !k.ExpiresAt.IsZero() {
			out.ExpiresAt = &k.ExpiresAt
		}
		b, err := json.Marshal(out)
		if err != nil {
			return fmt.Errorf("authkey create: %w", err)
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	// The description goes to stderr so that KEY=$(... authkey create) gets
	// only the key.
	kind := "single-use"
	if k.Reusable {
		kind = "reusable"
	}
	expires := "never expires"
	if !k.ExpiresAt.IsZero() {
		expires = "expires " + k.ExpiresAt.Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "created %s auth key %d (%s)\n", kind, k.ID, expires)
	fmt.Fprintln(stdout, k.Key)
	return nil
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/policy"
)

const policySetAbout = `Checks the access policy in FILE (HuJSON: syntax, selectors and every
"tests" entry) and makes it the mesh's policy. With a running server it
reaches every connected agent within a second. A refused file changes
nothing: the old policy stays.`

const policyCheckAbout = `Checks the access policy in FILE as "policy set" does, without storing it.`

const policyGetAbout = `Prints the access policy as it was set. With none set, says so: every node
may then reach every other.`

func runPolicySet(args []string, stdout, stderr io.Writer) error {
	return runPolicyFile("policy set", policySetAbout, args, stdout, stderr, func(ctx context.Context, a *coordinator.Admin, src []byte) (string, error) {
		return "policy set", a.SetPolicy(ctx, src)
	})
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	return runPolicyFile("policy check", policyCheckAbout, args, stdout, stderr, func(ctx context.Context, a *coordinator.Admin, src []byte) (string, error) {
		return "policy is valid", a.CheckPolicy(ctx, src)
	})
}

func runPolicyFile(name, about string, args []string, stdout, stderr io.Writer,
	op func(context.Context, *coordinator.Admin, []byte) (string, error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	storeName := storeFlags(fs)
	pos, err := parseFlagsArgs(fs, "FILE", about, 1, args, stdout, stderr)
	if err != nil {
		return err
	}
	src, err := readPolicyFile(pos[0])
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return withAdmin(name, *stateDir, storeName, false, func(ctx context.Context, a *coordinator.Admin) error {
		msg, err := op(ctx, a, src)
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		fmt.Fprintln(stdout, msg)
		return nil
	})
}

// withAdmin runs fn with the way to change stateDir (see OpenAdmin),
// errors prefixed with the command's name. With mustExist, a state
// directory without a store is an error rather than created.
func withAdmin(name, stateDir string, storeName func() (string, error), mustExist bool, fn func(context.Context, *coordinator.Admin) error) error {
	store, err := storeName()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if mustExist {
		if err := coordinator.RequireState(stateDir, store); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := coordinator.OpenAdminStore(ctx, stateDir, store)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer admin.Close()
	if err := fn(ctx, admin); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func readPolicyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, policy.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(src) > policy.MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, policy.MaxSize)
	}
	return src, nil
}

const policyClearAbout = `Removes the access policy: every node may reach every other again.`

func runPolicyClear(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy clear", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	storeName := storeFlags(fs)
	if _, err := parseFlagsArgs(fs, "", policyClearAbout, 0, args, stdout, stderr); err != nil {
		return err
	}
	return withAdmin("policy clear", *stateDir, storeName, false, func(ctx context.Context, a *coordinator.Admin) error {
		if err := a.ClearPolicy(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "policy cleared: every node may reach every other")
		return nil
	})
}

func runPolicyGet(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy get", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir, "state `directory`")
	storeName := storeFlags(fs)
	if _, err := parseFlagsArgs(fs, "", policyGetAbout, 0, args, stdout, stderr); err != nil {
		return err
	}
	return withAdmin("policy get", *stateDir, storeName, true, func(ctx context.Context, a *coordinator.Admin) error {
		src, err := a.Policy(ctx)
		if err != nil {
			return err
		}
		if src == nil {
			fmt.Fprintln(stderr, "no policy set: every node may reach every other")
			return nil
		}
		_, err = stdout.Write(src)
		return err
	})
}

// Command meshvpn-coordinator runs the meshvpn coordinator (serve) and
// administers its state (authkey, nodes, policy, usage). It only parses flags; the work is
// in package coordinator.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

const defaultStateDir = "./meshvpn-coordinator-state"

const usage = `meshvpn-coordinator runs and administers the meshvpn coordinator.

Usage:
  meshvpn-coordinator serve [flags]                    run the coordinator (HTTP API, streams, STUN)
  meshvpn-coordinator authkey create [flags]           create an auth key that admits nodes
  meshvpn-coordinator authkey list [flags]             list auth keys and whether they still work
  meshvpn-coordinator authkey revoke [flags] ID        make an auth key unusable
  meshvpn-coordinator nodes list [flags]               list the nodes of the mesh
  meshvpn-coordinator nodes remove [flags] NODE        remove a node; peers drop it at once
  meshvpn-coordinator nodes expire [flags] NODE        expire a node's credential now
  meshvpn-coordinator nodes rename [flags] NODE NAME   rename a node
  meshvpn-coordinator policy set [flags] FILE          check and apply an access policy
  meshvpn-coordinator policy check [flags] FILE        check an access policy only
  meshvpn-coordinator policy get [flags]               print the access policy
  meshvpn-coordinator policy clear [flags]             remove the access policy (allow everything)
  meshvpn-coordinator usage [flags]                    relay usage per node and relay

Run "meshvpn-coordinator <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks a usage error that has already been reported.
var errUsage = errors.New("usage error")

// run is main without the process: it returns the exit code, 0 on success,
// 2 on bad usage, 1 on failure.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "serve":
		err = runServe(rest, stdout, stderr)
	case "authkey":
		err = runGroup("authkey", map[string]command{
			"create": runAuthKeyCreate, "list": runAuthKeyList, "revoke": runAuthKeyRevoke,
		}, rest, stdout, stderr)
	case "nodes":
		err = runGroup("nodes", map[string]command{
			"list": runNodesList, "remove": runNodesRemove, "expire": runNodesExpire, "rename": runNodesRename,
		}, rest, stdout, stderr)
	case "policy":
		err = runGroup("policy", map[string]command{
			"set": runPolicySet, "check": runPolicyCheck, "get": runPolicyGet, "clear": runPolicyClear,
		}, rest, stdout, stderr)
	case "usage":
		err = runUsage(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "meshvpn-coordinator: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "meshvpn-coordinator: %v\n", err)
		return 1
	}
}

type command func(args []string, stdout, stderr io.Writer) error

// runGroup dispatches "<group> <sub> [flags]".
func runGroup(group string, subs map[string]command, args []string, stdout, stderr io.Writer) error {
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	slices.Sort(names)
	help := fmt.Sprintf("usage: meshvpn-coordinator %s {%s} [flags]\n", group, strings.Join(names, "|"))
	if len(args) == 0 {
		fmt.Fprintf(stderr, "meshvpn-coordinator %s: missing subcommand\n%s", group, help)
		return errUsage
	}
	if a := args[0]; a == "-h" || a == "-help" || a == "--help" || a == "help" {
		fmt.Fprint(stdout, help)
		return flag.ErrHelp
	}
	sub, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "meshvpn-coordinator %s: unknown subcommand %q\n%s", group, args[0], help)
		return errUsage
	}
	return sub(args[1:], stdout, stderr)
}

// parseFlags parses a subcommand's flags. --help prints the description and
// flags to stdout; a bad flag or a stray argument is a usage error on stderr.
func parseFlags(fs *flag.FlagSet, about string, args []string, stdout, stderr io.Writer) error {
	_, err := parseFlagsArgs(fs, "", about, 0, args, stdout, stderr)
	return err
}

// parseFlagsArgs is parseFlags for a command that takes exactly nargs
// positional arguments (described by argsUsage), which may come before,
// between or after the flags.
func parseFlagsArgs(fs *flag.FlagSet, argsUsage, about string, nargs int, args []string, stdout, stderr io.Writer) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	printHelp := func(w io.Writer) {
		fmt.Fprintf(w, "usage: meshvpn-coordinator %s [flags] %s\n\n%s\n\nFlags:\n", fs.Name(), argsUsage, about)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	var pos []string
	var err error
	for {
		err = fs.Parse(args)
		if err != nil || fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if errors.Is(err, flag.ErrHelp) {
		printHelp(stdout)
		return nil, flag.ErrHelp
	}
	if err == nil && len(pos) > nargs {
		err = fmt.Errorf("unexpected argument %q", pos[nargs])
	}
	if err == nil && len(pos) < nargs {
		err = fmt.Errorf("missing argument: want %s", argsUsage)
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshvpn-coordinator %s: %v\nRun \"meshvpn-coordinator %s --help\" for usage.\n", fs.Name(), err, fs.Name())
		return nil, errUsage
	}
	return pos, nil
}

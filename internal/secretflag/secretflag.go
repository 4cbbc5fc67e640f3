// Package secretflag reads secrets given to a command: from a flag, an
// environment variable or a file. A flag's value shows in `ps` to every
// user of the host, so the commands warn when a secret comes that way.
package secretflag

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is one secret's three sources.
type Secret struct {
	Flag     string // e.g. "authkey"
	FileFlag string // e.g. "authkey-file"
	Env      string // e.g. "MESHVPN_AUTHKEY"; empty if none
}

// Value picks the secret: the file if given, else the flag, else the
// environment variable. Giving both the flag and the file is an error. fs
// must be parsed; flagVal and file are the two flags' values.
func (s Secret) Value(fs *flag.FlagSet, flagVal, file string) (string, error) {
	if file != "" {
		if isSet(fs, s.Flag) {
			return "", fmt.Errorf("give --%s or --%s, not both", s.Flag, s.FileFlag)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", s.FileFlag, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("--%s %s is empty", s.FileFlag, file)
		}
		return v, nil
	}
	if isSet(fs, s.Flag) || s.Env == "" {
		return flagVal, nil
	}
	return os.Getenv(s.Env), nil
}

// Warn logs a warning for each of secrets given as a flag on the command
// line, naming the safer ways.
func Warn(fs *flag.FlagSet, log *slog.Logger, secrets ...Secret) {
	for _, s := range secrets {
		if !isSet(fs, s.Flag) {
			continue
		}
		alt := "--" + s.FileFlag
		if s.Env != "" {
			alt += " or the environment variable " + s.Env
		}
		log.Warn("--"+s.Flag+" on the command line is visible to every user of this host (ps, /proc); use "+alt+" instead", "flag", s.Flag)
	}
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

package main

import (
	"flag"

	"github.com/meshvpn/meshvpn/coordinator"
	"github.com/meshvpn/meshvpn/internal/secretflag"
)

// storeSrc names the store: a PostgreSQL URL or DSN may carry a password,
// so it may also come from a file or the environment.
var storeSrc = secretflag.Secret{Flag: "store", FileFlag: "store-file", Env: "MESHVPN_STORE"}

const storeUsage = "PostgreSQL `URL` or DSN of the store (postgres://user@host/db or host=... dbname=...); empty: SQLite in --state. A URL with a password is better given with --store-file or MESHVPN_STORE"

// storeFlags adds --store and --store-file to fs; the function returned
// picks the store's name once fs is parsed ("" for SQLite).
func storeFlags(fs *flag.FlagSet) func() (string, error) {
	url := fs.String("store", "", storeUsage)
	file := fs.String("store-file", "", "`file` holding --store's URL or DSN")
	return func() (string, error) { return storeSrc.Value(fs, *url, *file) }
}

// storeOpener adds the store flags to fs and returns what opens the store
// once fs is parsed. With mustExist, a missing SQLite store is an error
// rather than created (see coordinator.RequireState).
func storeOpener(fs *flag.FlagSet, stateDir *string, mustExist bool) func() (*coordinator.Store, error) {
	name := storeFlags(fs)
	return func() (*coordinator.Store, error) {
		n, err := name()
		if err != nil {
			return nil, err
		}
		if mustExist {
			if err := coordinator.RequireState(*stateDir, n); err != nil {
				return nil, err
			}
		}
		return coordinator.OpenStoreAt(*stateDir, n)
	}
}

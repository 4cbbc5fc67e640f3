//go:build pprof

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// A profiling build (go build -tags pprof) serves net/http/pprof for
// `meshvpn up` on $MESHVPN_PPROF (e.g. 127.0.0.1:6060). Release builds
// leave it out: the endpoint has no authentication. Used to profile the
// agent in make bench-mesh-active.
func init() {
	addr := os.Getenv("MESHVPN_PPROF")
	if addr == "" || len(os.Args) < 2 || os.Args[1] != "up" {
		return
	}
	go func() {
		slog.Warn("pprof endpoint ended", "addr", addr, "err", http.ListenAndServe(addr, nil))
	}()
}

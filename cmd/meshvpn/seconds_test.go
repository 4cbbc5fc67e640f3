package main

import (
	"flag"
	"io"
	"testing"
	"time"
)

func TestSecondsFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"0.2": 200 * time.Millisecond, "2": 2 * time.Second, "150ms": 150 * time.Millisecond, "1m": time.Minute} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		d := secondsFlag(fs, "i", time.Second, "")
		if err := fs.Parse([]string{"-i", in}); err != nil || *d != want {
			t.Errorf("-i %s: %v, %v; want %v", in, *d, err, want)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	secondsFlag(fs, "i", time.Second, "")
	if err := fs.Parse([]string{"-i", "soon"}); err == nil {
		t.Error("-i soon accepted")
	}
}

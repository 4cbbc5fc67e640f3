package secretflag

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValueAndWarn(t *testing.T) {
	s := Secret{Flag: "authkey", FileFlag: "authkey-file", Env: "TEST_SECRETFLAG_KEY"}
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte(" from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(s.Env, "from-env")
	for _, tc := range []struct {
		args    []string
		want    string
		wantErr bool
		warned  bool
	}{
		{nil, "from-env", false, false},
		{[]string{"--authkey", "from-flag"}, "from-flag", false, true},
		{[]string{"--authkey-file", file}, "from-file", false, false},
		{[]string{"--authkey", "x", "--authkey-file", file}, "", true, true},
		{[]string{"--authkey-file", filepath.Join(t.TempDir(), "missing")}, "", true, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		v := fs.String("authkey", "", "")
		f := fs.String("authkey-file", "", "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := s.Value(fs, *v, *f)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%q: %q, %v; want %q (error %v)", tc.args, got, err, tc.want, tc.wantErr)
		}
		var log bytes.Buffer
		Warn(fs, slog.New(slog.NewTextHandler(&log, nil)), s)
		if warned := strings.Contains(log.String(), "visible to every user"); warned != tc.warned {
			t.Errorf("%q: warned %v, want %v: %s", tc.args, warned, tc.warned, log.String())
		}
		if strings.Contains(log.String(), "from-flag") {
			t.Errorf("the warning logs the secret: %s", log.String())
		}
	}
}

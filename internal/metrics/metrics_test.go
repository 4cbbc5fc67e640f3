package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_requests_total", "Requests.\nSecond line.", "result")
	g := r.Gauge("x_streams", "Open streams.")
	r.GaugeFunc("x_peer_age_seconds", "Age.", []string{"peer"}, func() []Sample {
		return []Sample{{Labels: []string{`b"\`}, Value: 2.5}, {Labels: []string{"a"}, Value: 1}}
	})
	c.With("ok").Add(2)
	c.With("denied").Inc()
	g.Set(7)
	var b strings.Builder
	r.WriteTo(&b)
	want := `# HELP x_requests_total Requests.\nSecond line.
# TYPE x_requests_total counter
x_requests_total{result="denied"} 1
x_requests_total{result="ok"} 2
# HELP x_streams Open streams.
# TYPE x_streams gauge
x_streams 7
# HELP x_peer_age_seconds Age.
# TYPE x_peer_age_seconds gauge
x_peer_age_seconds{peer="a"} 1
x_peer_age_seconds{peer="b\"\\"} 2.5
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	m, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if m[`x_requests_total{result="ok"}`] != 2 || m["x_streams"] != 7 {
		t.Fatalf("parsed %v", m)
	}
}

func TestUnlabelledFamilyHasZeroSample(t *testing.T) {
	r := NewRegistry()
	r.Counter("y_total", "Y.")
	var b strings.Builder
	r.WriteTo(&b)
	if !strings.Contains(b.String(), "\ny_total 0\n") {
		t.Fatalf("missing zero sample:\n%s", b.String())
	}
}

func TestListenServesMetrics(t *testing.T) {
	r := NewRegistry()
	r.Counter("z_total", "Z.").Add(3)
	s, err := Listen("127.0.0.1:0", r, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr().String() + Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType || !strings.Contains(string(body), "z_total 3") {
		t.Fatalf("status %d type %q body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp2, err := http.Post("http://"+s.Addr().String()+Path, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp2.StatusCode)
	}
}

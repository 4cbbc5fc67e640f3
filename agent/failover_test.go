package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/meshvpn/meshvpn/control"
)

func TestParseCoordinators(t *testing.T) {
	got, err := ParseCoordinators([]string{"http://a:8080, http://b:8080", "http://c:8080", "http://a:8080"})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, u := range got {
		s = append(s, u.String())
	}
	if len(s) != 3 || s[0] != "http://a:8080" || s[1] != "http://b:8080" || s[2] != "http://c:8080" {
		t.Fatalf("got %v", s)
	}
	for _, bad := range [][]string{nil, {""}, {" , "}, {"http://a:8080,ftp://b"}, {"a:8080"}} {
		if _, err := ParseCoordinators(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// streamServer is a coordinator stub: each stream gets a netmap with
// version nv, and the since each stream asked with is recorded. mute makes
// it stop reading (so pings go unanswered) after the netmap.
type streamServer struct {
	*httptest.Server
	nv    string
	mute  bool
	mu    sync.Mutex
	since []string
}

func newStreamServer(t *testing.T, nv string, mute bool) *streamServer {
	s := &streamServer{nv: nv, mute: mute}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.since = append(s.since, r.URL.Query().Get(control.QuerySince))
		s.mu.Unlock()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if err := wsjson.Write(r.Context(), ws, control.Message{Type: control.MsgNetmap, NetmapVersion: s.nv, Netmap: &control.Netmap{}}); err != nil {
			return
		}
		if s.mute {
			<-r.Context().Done()
			return
		}
		for {
			if _, _, err := ws.Read(r.Context()); err != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *streamServer) sinces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.since...)
}

// waitOn waits until c's stream is up at url.
func waitOn(t *testing.T, c *controlClient, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		up, _ := c.status()
		if up && c.coordinatorURL().String() == url {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	up, lastErr := c.status()
	t.Fatalf("not on %s within %v: on %s, connected=%v (%s)", url, within, c.coordinatorURL(), up, lastErr)
}

// TestFailoverUnreachable: the first coordinator refuses connections; the
// agent moves to the second at once.
func TestFailoverUnreachable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	good := newStreamServer(t, "e.1", false)
	c, err := newControlClient([]string{dead.URL, good.URL}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.runStream(ctx, "1.secret", func(control.Message) {})
	waitOn(t, c, good.URL, 2*time.Second)
}

// TestFailoverMuteCoordinator: the first coordinator accepts the stream but
// then answers nothing (a host gone dark, no TCP reset). Pings notice, and
// the agent moves to the second within 5 s, naming the netmap version it
// holds.
func TestFailoverMuteCoordinator(t *testing.T) {
	mute := newStreamServer(t, "e.7", true)
	good := newStreamServer(t, "e.8", false)
	c, err := newControlClient([]string{mute.URL, good.URL}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.runStream(ctx, "1.secret", func(control.Message) {})
	waitOn(t, c, mute.URL, 2*time.Second)
	start := time.Now()
	waitOn(t, c, good.URL, 5*time.Second)
	t.Logf("moved after %v", time.Since(start).Round(time.Millisecond))
	if got := good.sinces(); len(got) == 0 || got[0] != "e.7" {
		t.Fatalf("second coordinator was asked with since %q, want the version the first sent (e.7)", got)
	}
}

// TestRegisterFailover: registration goes to the next coordinator when the
// first cannot be reached, and the stream then stays there.
func TestRegisterFailover(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"node_id":7,"name":"n","ip":"100.64.0.7","prefix":"100.64.0.0/10","credential":"7.x"}`))
	}))
	defer good.Close()
	c, err := newControlClient([]string{dead.URL, good.URL}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.register(ctx, control.RegisterRequest{Credential: "7.x", Hostname: "n"})
	if err != nil || resp.NodeID != 7 {
		t.Fatalf("register: %+v, %v", resp, err)
	}
	if got := c.coordinatorURL().String(); got != good.URL {
		t.Fatalf("registered at %s, want %s", got, good.URL)
	}
}

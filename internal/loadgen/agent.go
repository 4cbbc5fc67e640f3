package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/meshvpn/meshvpn/control"
)

// simAgent is one simulated agent: a registration and a held stream, no
// TUN and no WireGuard. Its "public key" is 32 random bytes, which is all
// the coordinator checks.
type simAgent struct {
	index  int
	pub    string
	nodeID uint64
	cred   string
	ws     *websocket.Conn
	// netmapBytes is the size of the first frame; netmapAt when it came.
	netmapBytes atomic.Int64
	netmapAt    atomic.Int64
	// nv is the netmap version of the last frame that named one (a
	// string); stormAt, stormBytes and resumed describe the reconnect storm
	// (see storm.go).
	nv         atomic.Value
	stormAt    atomic.Int64
	stormBytes atomic.Int64
	resumed    atomic.Bool
	// inStorm marks the agents that reconnect in a storm (with replicas,
	// those of the replica that stopped).
	inStorm atomic.Bool
	// gen counts the streams the load generator itself closed, so a read
	// loop tells their end from the coordinator ending its stream.
	gen atomic.Int64
	// losses counts streams the coordinator ended in a row, each shorter
	// than 30 s: the agent's backoff (see stormRedial).
	losses atomic.Int64
}

func newPublicKey() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// register admits the agent with the auth key.
func (a *simAgent) register(ctx context.Context, hc *http.Client, base, authKey string) error {
	body, err := json.Marshal(control.RegisterRequest{AuthKey: authKey, Hostname: "sim-" + strconv.Itoa(a.index), PublicKey: a.pub})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+control.PathRegister, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("register agent %d: %w", a.index, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("register agent %d: %s: %s", a.index, resp.Status, bytes.TrimSpace(b))
	}
	var rr control.RegisterResponse
	if err := json.Unmarshal(b, &rr); err != nil {
		return fmt.Errorf("register agent %d: %w", a.index, err)
	}
	a.nodeID, a.cred = rr.NodeID, rr.Credential
	return nil
}

// dial opens the agent's stream.
func (a *simAgent) dial(ctx context.Context, hc *http.Client, wsBase string) error {
	return a.dialSince(ctx, hc, wsBase, "")
}

// dialSince opens the agent's stream naming the netmap version it holds
// ("" for none).
func (a *simAgent) dialSince(ctx context.Context, hc *http.Client, wsBase, since string) error {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+a.cred)
	u := wsBase + control.PathStream + "?v=" + strconv.Itoa(control.ProtocolVersion)
	if since != "" {
		u += "&" + control.QuerySince + "=" + url.QueryEscape(since)
	}
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h, HTTPClient: hc})
	if err != nil {
		return fmt.Errorf("stream of agent %d: %w", a.index, err)
	}
	ws.SetReadLimit(64 << 20)
	a.ws = ws
	return nil
}

// readLoop reads frames until the stream ends, timing probes as frames
// arrive. The netmap is only measured, never kept: 10,000 agents holding a
// 1.5 MB netmap each would measure the load generator, not the coordinator.
func (a *simAgent) readLoop(g *run) {
	var buf bytes.Buffer
	ws, gen, began := a.ws, a.gen.Load(), time.Now()
	for {
		_, r, err := ws.Reader(context.Background())
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			ws.CloseNow() // its socket, whoever ended the stream
			if a.index < g.cfg.N && g.measuring.Load() {
				g.lost.Add(1)
			}
			if a.gen.Load() == gen && g.storming.Load() && a.inStorm.Load() {
				// The coordinator ended the stream while the storm ran:
				// an agent would dial again (see storm.go).
				if time.Since(began) > 30*time.Second {
					a.losses.Store(0)
				}
				go g.stormRedial(a)
			}
			return
		}
		now := time.Now()
		g.lastFrame.Store(now.UnixNano())
		frame := buf.Bytes()
		if v := frameVersion(frame); v != "" {
			a.nv.Store(v)
		}
		if g.storming.Load() && a.inStorm.Load() {
			a.stormBytes.Add(int64(len(frame)))
			if a.stormAt.CompareAndSwap(0, now.UnixNano()) {
				a.resumed.Store(bytes.HasPrefix(frame, []byte(`{"type":"resume"`)))
				g.stormFirst.Add(1)
			}
		}
		if a.netmapAt.Load() == 0 {
			a.netmapBytes.Store(int64(len(frame)))
			a.netmapAt.Store(now.UnixNano())
			g.netmaps.Add(1)
		}
		if p := g.probe.Load(); p != nil {
			p.observe(a.index, frame, now)
		}
		if buf.Cap() > 256<<10 {
			buf = bytes.Buffer{} // let a netmap-sized buffer go
		}
	}
}

// probe times one change on its way to every agent.
type probe struct {
	start time.Time
	// match says whether a frame carries the change.
	match func(frame []byte) bool
	// skip is the agent the change is about, which is not a receiver.
	skip int
	lat  []atomic.Int64 // nanoseconds + 1; 0 until seen
	seen atomic.Int64
}

func newProbe(n, skip int, match func([]byte) bool) *probe {
	return &probe{start: time.Now(), match: match, skip: skip, lat: make([]atomic.Int64, n)}
}

func (p *probe) observe(i int, frame []byte, now time.Time) {
	if i == p.skip || i >= len(p.lat) || p.lat[i].Load() != 0 || !p.match(frame) {
		return
	}
	if p.lat[i].CompareAndSwap(0, int64(now.Sub(p.start))+1) {
		p.seen.Add(1)
	}
}

// latencies returns what was seen, in seconds.
func (p *probe) latencies() []float64 { return p.latenciesOf(func(int) bool { return true }) }

// latenciesOf returns what the agents keep accepts saw, in seconds.
func (p *probe) latenciesOf(keep func(i int) bool) []float64 {
	var out []float64
	for i := range p.lat {
		if !keep(i) {
			continue
		}
		if v := p.lat[i].Load(); v != 0 {
			out = append(out, float64(v-1)/1e9)
		}
	}
	return out
}

// deltaNode finds node id in a delta frame: its entry, or removed.
func deltaNode(frame []byte, id uint64) (n control.Node, upserted, removed bool) {
	var m control.Message
	if err := json.Unmarshal(frame, &m); err != nil || m.Type != control.MsgDelta || m.Delta == nil {
		return n, false, false
	}
	for _, u := range m.Delta.Upsert {
		if u.ID == id {
			return u, true, false
		}
	}
	for _, r := range m.Delta.Remove {
		if r == id {
			return n, false, true
		}
	}
	return n, false, false
}

// idMarker is the bytes a frame naming node id contains, to skip parsing
// the frames that do not.
func idMarker(id uint64) []byte { return []byte(`"id":` + strconv.FormatUint(id, 10) + `,`) }

var errTimeout = errors.New("timed out")

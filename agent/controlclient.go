package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/cabundle"
	"github.com/meshvpn/meshvpn/internal/logsafe"
)

// controlClient talks to the coordinator: registration over HTTP and the
// long-lived stream that carries the netmap and ICE signalling.
type controlClient struct {
	// bases are the coordinators of the mesh, in the order given; the one
	// in use is bases[cur] (see coordinators.go).
	bases []*url.URL
	http  *http.Client
	log   *slog.Logger

	out chan control.Message
	// pubKey is sent with the stream request, to which the credential is
	// bound.
	pubKey string
	// priv proves that we hold pubKey when registering by auth key.
	priv Key
	// onRefused is called when the coordinator refuses this node's
	// credential on the stream (removed, expired): retrying will not help
	// until an operator acts, and the mesh no longer counts us in.
	onRefused func(reason string)

	mu        sync.Mutex
	connected bool
	lastErr   string
	cur       int // index in bases of the coordinator in use
	tried     int // coordinators that failed in a row, to end a round
	// since is the netmap version this agent holds (see resume.go), sent
	// when the stream reconnects; "" until a netmap came.
	since string
	// pingLost says the last stream was left for not answering pings.
	pingLost bool
}

// refusedError is an answer the coordinator gave on purpose (4xx): retrying
// the same request cannot help.
type refusedError struct {
	status int
	msg    string
}

func (e *refusedError) Error() string {
	if e.status >= 1000 { // a WebSocket close code, not an HTTP status
		return fmt.Sprintf("coordinator refused: %s (stream closed with code %d)", e.msg, e.status)
	}
	return fmt.Sprintf("coordinator refused: %s (HTTP %d)", e.msg, e.status)
}

func newControlClient(coordinators []string, caFile string, log *slog.Logger) (*controlClient, error) {
	us, err := ParseCoordinators(coordinators)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := cabundle.ClientTLS(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &controlClient{
		bases: us,
		http:  &http.Client{Timeout: 15 * time.Second, Transport: tr},
		log:   log,
		out:   make(chan control.Message, 256),
	}, nil
}

func parseCoordinatorURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("--coordinator URL is required (e.g. https://coord.example.com)")
	}
	return control.ParseCoordinatorURL(s)
}

// register admits the node, retrying with backoff while the coordinator is
// unreachable or failing, and giving up at once when it refuses.
func (c *controlClient) register(ctx context.Context, req control.RegisterRequest) (*control.RegisterResponse, error) {
	var b backoff
	stale := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*c.dialTimeout())
		resp, err := c.registerOnce(rctx, req)
		cancel()
		if err == nil {
			c.reached()
			return resp, nil
		}
		if isStaleChallenge(err) && stale < 2 {
			stale++ // each attempt fetches a fresh challenge
			continue
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			return nil, err
		}
		if isCertError(err) {
			return nil, fmt.Errorf("coordinator's TLS certificate is not trusted (give its CA with --ca-file): %w", err)
		}
		at := c.coordinatorURL().String()
		if ctx.Err() == nil && !c.moveOn() {
			c.log.Warn("coordinator unreachable, trying the next", "url", at, "err", err)
			continue
		}
		d := c.nextBackoff(&b)
		c.log.Warn("coordinator unreachable, retrying", "url", at, "err", err, "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("register: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(d):
		}
	}
}

func (c *controlClient) registerOnce(ctx context.Context, req control.RegisterRequest) (*control.RegisterResponse, error) {
	if req.AuthKey != "" {
		err := c.prove(ctx, &req)
		if errors.Is(err, errNoChallenge) {
			c.log.Debug("coordinator issues no challenges; registering without proof of key possession")
		} else if err != nil {
			return nil, err
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.coordinatorURL().JoinPath(control.PathRegister).String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read register answer: %w", err)
	}
	if hresp.StatusCode != http.StatusOK {
		var e control.Error
		msg := http.StatusText(hresp.StatusCode)
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = logsafe.Clip(e.Error)
		}
		if hresp.StatusCode >= 400 && hresp.StatusCode < 500 && hresp.StatusCode != http.StatusTooManyRequests {
			return nil, &refusedError{status: hresp.StatusCode, msg: msg}
		}
		return nil, fmt.Errorf("register: HTTP %d: %s", hresp.StatusCode, msg)
	}
	var resp control.RegisterResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("decode register answer: %w", err)
	}
	return &resp, nil
}

// isCertError tells a TLS verification failure, which no retry can fix, from
// a network failure, which a retry may.
func isCertError(err error) bool {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &host) || errors.As(err, &verify)
}

// send queues a message for the coordinator. While the stream is down the
// message is dropped: signalling is retried by the sessions themselves, and a
// queue of stale candidates would only confuse the peer later.
func (c *controlClient) send(m control.Message) {
	c.mu.Lock()
	up := c.connected
	c.mu.Unlock()
	if !up {
		return
	}
	select {
	case c.out <- m:
	default:
		c.log.Warn("control stream send queue full, dropping message", "type", m.Type)
	}
}

func (c *controlClient) status() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastErr
}

// runStream keeps the stream up until ctx ends, reconnecting with jittered
// backoff. The data plane does not depend on it: tunnels keep working while
// the coordinator is away.
func (c *controlClient) runStream(ctx context.Context, credential string, handle func(control.Message)) {
	var b backoff
	for ctx.Err() == nil {
		start := time.Now()
		at := c.coordinatorURL().String()
		connected, err := c.streamOnce(ctx, credential, handle)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if c.pingLost {
			// Unreachable, not just restarted: try another at once.
			connected, c.pingLost = false, false
		}
		c.mu.Unlock()
		if time.Since(start) > 30*time.Second {
			b.reset()
		}
		var refused *refusedError
		// A stream that was up is retried at the same coordinator first;
		// one that could not be opened sends us to the next.
		if !connected && !errors.As(err, &refused) && !c.moveOn() {
			c.mu.Lock()
			c.lastErr = err.Error()
			c.mu.Unlock()
			c.log.Warn("coordinator unreachable, trying the next", "url", at, "err", err)
			continue
		}
		if connected {
			c.reached()
		}
		if errors.As(err, &refused) {
			// Retrying soon cannot help: wait the longest backoff.
			b.n = 100
			c.log.Error("coordinator refused this node; start again with --authkey to rejoin", "reason", refused.msg)
			// Only an operator's removal or expiry takes the peers away; any
			// other refusal (a store restored from an old backup, say) leaves
			// working tunnels alone, as an outage does.
			if c.onRefused != nil && (refused.msg == control.ReasonNodeRemoved || refused.msg == control.ReasonNodeExpired) {
				c.onRefused(refused.msg)
			}
		}
		d := c.nextBackoff(&b)
		if refused != nil {
			// Every coordinator of the mesh would refuse alike.
			d = b.next()
		}
		c.mu.Lock()
		c.lastErr = err.Error()
		c.mu.Unlock()
		c.log.Warn("coordinator stream lost, reconnecting", "err", err, "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// streamOnce runs one stream; connected says whether it was opened.
func (c *controlClient) streamOnce(ctx context.Context, credential string, handle func(control.Message)) (connected bool, err error) {
	base := c.coordinatorURL()
	u := *base.JoinPath(control.PathStream)
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.RawQuery = c.streamQuery()
	dctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
	ws, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: c.http.Transport},
		HTTPHeader: http.Header{
			"Authorization":         []string{"Bearer " + credential},
			control.HeaderPublicKey: []string{c.pubKey},
		},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			msg := http.StatusText(resp.StatusCode)
			if resp.Body != nil {
				var e control.Error
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				if json.Unmarshal(data, &e) == nil && e.Error != "" {
					msg = logsafe.Clip(e.Error)
				}
			}
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				return false, &refusedError{status: resp.StatusCode, msg: msg}
			}
			return false, fmt.Errorf("open stream: HTTP %d: %s", resp.StatusCode, msg)
		}
		return false, fmt.Errorf("open stream: %w", err)
	}
	defer ws.CloseNow()
	// Any netmap the coordinator allows fits (see control.MaxNodes).
	ws.SetReadLimit(control.MaxNetmapFrame)
	c.log.Info("connected to coordinator", "url", base.String())

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	// Drain what was queued for an earlier connection: it is stale.
	for len(c.out) > 0 {
		<-c.out
	}
	c.mu.Lock()
	c.connected = true
	c.lastErr = ""
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.connected = false
		c.mu.Unlock()
	}()
	if c.multi() {
		go c.pingLoop(sctx, ws, stop)
	}

	writeErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-sctx.Done():
				writeErr <- nil
				return
			case m := <-c.out:
				wctx, cancel := context.WithTimeout(sctx, 10*time.Second)
				err := wsjson.Write(wctx, ws, m)
				cancel()
				if err != nil {
					writeErr <- err
					stop()
					return
				}
			}
		}
	}()
	for {
		var m control.Message
		if err := wsjson.Read(sctx, ws, &m); err != nil {
			select {
			case werr := <-writeErr:
				if werr != nil {
					return true, fmt.Errorf("stream write: %w", werr)
				}
			default:
			}
			switch code := websocket.CloseStatus(err); code {
			case control.CloseNodeRemoved, control.CloseNodeExpired:
				var ce websocket.CloseError
				msg := control.ReasonNodeRemoved
				if code == control.CloseNodeExpired {
					msg = control.ReasonNodeExpired
				}
				if errors.As(err, &ce) && ce.Reason != "" {
					msg = logsafe.Clip(ce.Reason)
				}
				return true, &refusedError{status: int(code), msg: msg}
			}
			return true, fmt.Errorf("stream read: %w", err)
		}
		handle(m)
		c.noteVersion(m)
	}
}

// backoff yields 0.5 s, 1 s, 2 s … up to 30 s, each with ±25 % jitter so a
// coordinator restart is not met by every agent in the same instant.
type backoff struct{ n int }

func (b *backoff) next() time.Duration {
	d := 500 * time.Millisecond << min(b.n, 6)
	if d > 30*time.Second {
		d = 30 * time.Second
	}
	b.n++
	j := time.Duration(rand.Int64N(int64(d)/2)) - d/4
	return d + j
}

func (b *backoff) reset() { b.n = 0 }

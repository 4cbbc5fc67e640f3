package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/meshvpn/meshvpn/control"
)

// Client calls a running server through its admin socket.
type Client struct {
	http *http.Client
}

// dialWait bounds how long an admin command waits for the admin socket of
// a server that holds the lock but is still starting.
const dialWait = 10 * time.Second

// Dial waits for the admin socket in stateDir to answer, for a caller that
// found the state dir's lock held by a server.
func Dial(ctx context.Context, stateDir string) (*Client, error) {
	path := filepath.Join(stateDir, Socket)
	c := &Client{http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
	deadline := time.Now().Add(dialWait)
	for {
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("a coordinator holds %s but its admin socket does not answer: %w", stateDir, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Call posts req as JSON to path and decodes the answer into out.
func (c *Client) Call(ctx context.Context, path string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	data, err := c.do(ctx, http.MethodPost, path, "application/json", body, 1<<20)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin socket: decode answer: %w", err)
	}
	return nil
}

// Raw sends body to path and returns at most limit bytes of the answer.
func (c *Client) Raw(ctx context.Context, method, path string, body []byte, limit int64) ([]byte, error) {
	return c.do(ctx, method, path, "", body, limit)
}

// do makes one request; an answer other than 2xx is an error with the
// server's message.
func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://coordinator"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e control.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return nil, errors.New(e.Error)
	}
	return data, nil
}

package netcheck

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/cabundle"
)

// FetchInfo asks the coordinator at coordinatorURL which STUN (and TURN)
// servers to test against. caFile, when set, is a PEM bundle trusted for
// the coordinator's TLS certificate.
func FetchInfo(ctx context.Context, coordinatorURL, caFile string) (*control.NetcheckInfo, error) {
	u, err := control.ParseCoordinatorURL(coordinatorURL)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := cabundle.ClientTLS(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	defer tr.CloseIdleConnections()
	endpoint := strings.TrimSuffix(u.String(), "/") + control.PathNetcheckInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("coordinator URL %q: %w", coordinatorURL, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return nil, fmt.Errorf("ask coordinator for STUN servers: its TLS certificate is not trusted (give its CA with --ca-file): %w", err)
		}
		return nil, fmt.Errorf("ask coordinator for STUN servers: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, control.MaxRequestBody))
	if err != nil {
		return nil, fmt.Errorf("ask coordinator for STUN servers: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		var e control.Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		hint := ""
		if resp.StatusCode == http.StatusNotFound {
			hint = " (a coordinator older than netcheck? give STUN servers with --stun)"
		}
		return nil, fmt.Errorf("ask coordinator for STUN servers: %s answered HTTP %d: %s%s", endpoint, resp.StatusCode, msg, hint)
	}
	var info control.NetcheckInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("ask coordinator for STUN servers: %s: not a netcheck-info answer: %w", endpoint, err)
	}
	return &info, nil
}

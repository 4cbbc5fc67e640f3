package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/huin/goupnp"
)

// A LAN neighbour can answer SSDP too, and a root agent that fetched any URL
// it was handed would make requests for it (to loopback services as well)
// and offer peers the external address it names. UPnP therefore talks to
// the gateway's own address and to nothing else: the LOCATION must name it,
// and no redirect, URLBase or control URL may lead elsewhere.

// maxDescription bounds a device description (miniupnpd's is about 4 KB).
const maxDescription = 256 << 10

// gatewayURL parses an IGD location and checks that its host is the
// gateway's address, as an IP literal.
func gatewayURL(loc string, gw netip.Addr) (*url.URL, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return nil, errors.New("IGD location is not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("IGD location scheme %.16q is not http", u.Scheme)
	}
	if err := onGateway(u, gw); err != nil {
		return nil, fmt.Errorf("IGD location: %w", err)
	}
	return u, nil
}

// onGateway checks that u's host is gw.
func onGateway(u *url.URL, gw netip.Addr) error {
	host, err := netip.ParseAddr(u.Hostname())
	if err != nil || host.Unmap() != gw {
		// The host is the sender's choice: quote a bounded part of it.
		return fmt.Errorf("host %.64q is not the gateway %s", u.Hostname(), gw)
	}
	return nil
}

// gatewayHTTPClient returns an HTTP client that connects only to gw: no
// proxy (a LAN address is no business of one), redirects only to gw, and a
// dialer that refuses any other address whatever URL it is given.
func gatewayHTTPClient(gw netip.Addr) *http.Client {
	d := &net.Dialer{Timeout: mapTimeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || ap.Addr().Unmap() != gw {
				return nil, fmt.Errorf("refusing to connect to %.64q: not the gateway %s", addr, gw)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxResponseHeaderBytes: 16 << 10,
		ResponseHeaderTimeout:  mapTimeout,
		DisableKeepAlives:      true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   3 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if err := onGateway(req.URL, gw); err != nil {
				return fmt.Errorf("refusing redirect: %w", err)
			}
			return nil
		},
	}
}

// fetchRootDevice reads the device description at u with hc, as goupnp's
// DeviceByURL does, but through the gateway-only client, with a size limit,
// and refusing a URLBase on another host.
func fetchRootDevice(ctx context.Context, hc *http.Client, u *url.URL, gw netip.Addr) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("IGD description request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("IGD description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("IGD description at %s: HTTP status %d", u.Redacted(), resp.StatusCode)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(io.LimitReader(resp.Body, maxDescription))
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	dec.CharsetReader = goupnp.CharsetReaderDefault
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("IGD description at %s: %w", u.Redacted(), err)
	}
	base := u
	if root.URLBaseStr != "" {
		b, err := url.Parse(root.URLBaseStr)
		if err != nil {
			return nil, errors.New("IGD description: bad URLBase")
		}
		if err := onGateway(b, gw); err != nil {
			return nil, fmt.Errorf("IGD description URLBase: %w", err)
		}
		base = b
	}
	root.SetURLBase(base)
	return root, nil
}

// pinToGateway makes a goupnp service client use hc, after checking that
// its control URL is on the gateway.
func pinToGateway(sc *goupnp.ServiceClient, hc *http.Client, gw netip.Addr) error {
	if err := onGateway(&sc.Service.ControlURL.URL, gw); err != nil {
		return fmt.Errorf("IGD control URL: %w", err)
	}
	sc.SOAPClient.HTTPClient = *hc
	return nil
}

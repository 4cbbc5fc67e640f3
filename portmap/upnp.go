package portmap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// UPnP IGD v1/v2 through github.com/huin/goupnp. Discovery is our own small
// SSDP search: goupnp's only multicasts and waits out the whole MX; we also
// ask the gateway directly (unicast M-SEARCH) and take the first answer from
// it. Some IGDs (miniupnpd 2.3.1) delay even the unicast answer by a random
// part of MX, so the probe gives UPnP that long (probeAll).

const (
	ssdpMulticast = "239.255.255.250:1900"
	// ssdpAnswerDelay is the MX of our search: an IGD answers after a
	// random delay of up to that long.
	ssdpAnswerDelay = time.Second
	ssdpPort        = 1900
	igdDevice       = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	mappingDesc     = "meshvpn"
)

// UPnP error codes that change what we do (UPnP IGD WANIPConnection:2).
const (
	upnpConflictInEntry         = 718
	upnpOnlyPermanentLeases     = 725
	upnpNoSuchEntryInArray      = 714
	upnpConflictWithOtherMapper = 729
)

// igdConn is what WANIPConnection1/2 and WANPPPConnection1 have in common.
type igdConn interface {
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) (intPort uint16, intClient string, enabled bool, desc string, lease uint32, err error)
}

// igdAnyPort is WANIPConnection2's AddAnyPortMapping: the router picks a free
// port near the one asked for instead of failing on a conflict.
type igdAnyPort interface {
	AddAnyPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) (uint16, error)
}

type upnpClient struct {
	cfg   Config
	gw    netip.Addr
	local netip.Addr

	conn    igdConn
	service string // which service answered, for logs
}

func newUPnPClient(cfg Config, gw, local netip.Addr) *upnpClient {
	return &upnpClient{cfg: cfg, gw: gw, local: local}
}

func (c *upnpClient) protocol() Protocol { return UPnP }

// probe finds the IGD and asks it for its external address.
func (c *upnpClient) probe(ctx context.Context) (netip.Addr, error) {
	var locs []string
	if c.cfg.UPnPURL != "" {
		locs = []string{c.cfg.UPnPURL}
	} else {
		var err error
		locs, err = ssdpSearch(ctx, c.cfg.ssdpAddr, netip.AddrPortFrom(c.gw, ssdpPort))
		if err != nil {
			return netip.Addr{}, err
		}
	}
	var errs []error
	for _, loc := range locs {
		conn, name, err := igdAt(ctx, loc, c.gw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, err := conn.GetExternalIPAddressCtx(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s at %s: GetExternalIPAddress: %w", name, c.gw, err))
			continue
		}
		c.conn, c.service = conn, name
		ip, _ := netip.ParseAddr(strings.TrimSpace(s))
		return ip.Unmap(), nil
	}
	if len(errs) == 0 {
		return netip.Addr{}, errors.New("no UPnP IGD answered the search")
	}
	return netip.Addr{}, errors.Join(errs...)
}

// igdAt reads the device description at loc, which must be on the gateway
// gw, and returns its WAN connection service, preferring WANIPConnection2
// (it has AddAnyPortMapping). Every request goes to gw only.
func igdAt(ctx context.Context, loc string, gw netip.Addr) (igdConn, string, error) {
	u, err := gatewayURL(loc, gw)
	if err != nil {
		return nil, "", err
	}
	hc := gatewayHTTPClient(gw)
	root, err := fetchRootDevice(ctx, hc, u, gw)
	if err != nil {
		return nil, "", err
	}
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, u); err == nil && len(cs) > 0 {
		return cs[0], "WANIPConnection2", pinToGateway(&cs[0].ServiceClient, hc, gw)
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, u); err == nil && len(cs) > 0 {
		return cs[0], "WANIPConnection1", pinToGateway(&cs[0].ServiceClient, hc, gw)
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, u); err == nil && len(cs) > 0 {
		return cs[0], "WANPPPConnection1", pinToGateway(&cs[0].ServiceClient, hc, gw)
	}
	return nil, "", fmt.Errorf("device at %s has no WAN IP or PPP connection service", u.Redacted())
}

func (c *upnpClient) externalAddr(ctx context.Context) (netip.Addr, error) {
	s, err := c.conn.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("UPnP GetExternalIPAddress: %w", err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("UPnP external address %q: %w", s, err)
	}
	return ip.Unmap(), checkExternal(ip)
}

func (c *upnpClient) mapPort(ctx context.Context, internal, wantExternal uint16, lease time.Duration) (Mapping, error) {
	if c.conn == nil {
		if _, err := c.probe(ctx); err != nil {
			return Mapping{}, err
		}
	}
	ip, err := c.externalAddr(ctx)
	if err != nil {
		return Mapping{}, err
	}
	if wantExternal == 0 {
		wantExternal = internal
	}
	secs := uint32(lease / time.Second)
	ext, err := c.add(ctx, internal, wantExternal, secs)
	if isUPnPCode(err, upnpOnlyPermanentLeases) {
		c.cfg.Logger.Info("UPnP router supports only permanent mappings; asking for lease 0")
		secs = 0
		ext, err = c.add(ctx, internal, wantExternal, 0)
	}
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{
		Protocol:     UPnP,
		External:     netip.AddrPortFrom(ip, ext),
		InternalPort: internal,
		Lease:        time.Duration(secs) * time.Second,
		Obtained:     time.Now(),
	}, nil
}

// add asks for the mapping: AddAnyPortMapping where the service has it,
// otherwise AddPortMapping, trying a few random ports on a conflict.
func (c *upnpClient) add(ctx context.Context, internal, want uint16, secs uint32) (uint16, error) {
	client := c.local.String()
	if any, ok := c.conn.(igdAnyPort); ok {
		port, err := any.AddAnyPortMappingCtx(ctx, "", want, "UDP", internal, client, true, mappingDesc, secs)
		if err == nil && port != 0 {
			return port, nil
		}
		if isUPnPCode(err, upnpOnlyPermanentLeases) {
			return 0, err
		}
		// Some v2 routers list the action but do not implement it.
		c.cfg.Logger.Debug("UPnP AddAnyPortMapping failed, trying AddPortMapping", "err", err)
	}
	port := want
	var err error
	for try := 0; try < 4; try++ {
		err = c.conn.AddPortMappingCtx(ctx, "", port, "UDP", internal, client, true, mappingDesc, secs)
		if err == nil {
			return port, nil
		}
		if !isUPnPCode(err, upnpConflictInEntry) && !isUPnPCode(err, upnpConflictWithOtherMapper) {
			break
		}
		port = randomPort()
	}
	return 0, fmt.Errorf("UPnP AddPortMapping: %w", err)
}

func (c *upnpClient) unmap(ctx context.Context, m Mapping) error {
	if c.conn == nil {
		return errors.New("no UPnP gateway")
	}
	err := c.conn.DeletePortMappingCtx(ctx, "", m.External.Port(), "UDP")
	if err != nil {
		return fmt.Errorf("UPnP DeletePortMapping: %w", err)
	}
	return nil
}

// UPnP has no epoch: a lost mapping is noticed at the next renewal.
func (c *upnpClient) checkEpoch(context.Context) (bool, error) { return false, nil }

func isUPnPCode(err error, code int) bool {
	var fault *soap.SOAPFaultError
	return errors.As(err, &fault) && fault.Detail.UPnPError.Errorcode == code
}

func randomPort() uint16 {
	n, err := rand.Int(rand.Reader, big.NewInt(65535-1024))
	if err != nil {
		return 40000
	}
	return uint16(1024 + n.Int64())
}

// ssdpSearch sends an M-SEARCH for an IGD to the multicast group and to the
// gateway itself, and returns the location of the first IGD that answers
// before ctx ends. Only the gateway's answers count, and only a location on
// the gateway's address: anyone on the LAN can answer.
func ssdpSearch(ctx context.Context, group string, gw netip.AddrPort) ([]string, error) {
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return nil, fmt.Errorf("SSDP: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	// MX must not be 0: some IGDs divide by it to pick their delay.
	req := fmt.Sprintf("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: %s\r\nMAN: \"ssdp:discover\"\r\nMX: %d\r\n\r\n",
		igdDevice, int(ssdpAnswerDelay/time.Second))
	var sendErr error
	for _, to := range []string{group, gw.String()} {
		addr, err := net.ResolveUDPAddr("udp4", to)
		if err != nil {
			continue
		}
		if _, err := c.WriteToUDP([]byte(req), addr); err != nil {
			sendErr = err
		}
	}
	// The first IGD to answer is taken: a LAN has one gateway, and waiting
	// for more would spend the probe's whole budget.
	var locs []string
	var refused error
	buf := make([]byte, 2048)
	for range 64 { // stray SSDP traffic is skipped, but not forever
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		loc := ssdpLocation(buf[:n])
		if loc == "" {
			continue
		}
		if from.Addr().Unmap() != gw.Addr() {
			refused = fmt.Errorf("ignored an IGD answer from %s, which is not the gateway", from.Addr())
			continue
		}
		if _, err := gatewayURL(loc, gw.Addr()); err != nil {
			refused = fmt.Errorf("ignored the gateway's IGD answer: %w", err)
			continue
		}
		locs = append(locs, loc)
		break
	}
	if len(locs) == 0 {
		switch {
		case refused != nil:
			return nil, fmt.Errorf("SSDP: %w", refused)
		case sendErr != nil:
			return nil, fmt.Errorf("SSDP search: %w", sendErr)
		}
		return nil, errors.New("SSDP: no IGD answered")
	}
	return locs, nil
}

// ssdpLocation returns the LOCATION of an SSDP answer about an IGD, or "".
func ssdpLocation(b []byte) string {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	if st := resp.Header.Get("ST"); st != "" && !strings.HasPrefix(st, "urn:schemas-upnp-org:device:InternetGatewayDevice:") {
		return ""
	}
	loc := resp.Header.Get("Location")
	if u, err := url.Parse(loc); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return ""
	}
	return loc
}

package coordinator

import (
	"net"
	"net/netip"
	"time"

	"github.com/meshvpn/meshvpn/relay"
)

// TURNConfig configures relaying. The embedded server and external servers
// can be used together; agents get credentials for each.
type TURNConfig struct {
	// Embedded runs a TURN server inside the coordinator.
	Embedded bool
	// Listen is the UDP and TCP address of the embedded server. When it
	// equals Config.STUNListen the TURN server answers STUN there too.
	Listen string
	// TLSListen is the TLS (turns:) address; it needs Config.TLSCert/TLSKey.
	TLSListen string
	// PublicIP is the address relayed packets come from, as agents must see
	// it: the public address of a host behind 1:1 NAT. Empty picks
	// Config.PublicHost when it is an IP, else the host's first global IPv4.
	PublicIP string
	// MinPort and MaxPort bound the relay ports (default 49152-65535).
	MinPort, MaxPort uint16
	// AllowPeers are private ranges the relay may reach anyway.
	AllowPeers []netip.Prefix
	// CredentialTTL is how long a minted credential works (default 12h);
	// agents get fresh ones at half-life.
	CredentialTTL time.Duration
	// AllocationLifetime is the longest a UDP allocation lives without a
	// refresh (default 2m; tests shorten it).
	AllocationLifetime time.Duration

	// URLs are external TURN servers (turn: or turns: URIs).
	URLs []string
	// Secret is the external servers' REST API shared secret (coturn's
	// static-auth-secret). Username/Password are static credentials instead.
	Secret             string
	Username, Password string
	// CAFile is a PEM bundle handed to agents to verify turns: servers with
	// a private CA.
	CAFile string
}

const defaultCredentialTTL = 12 * time.Hour

// listenTURN starts the embedded relay (package relay) for this mesh. udp,
// when not nil, is the socket it shares with the STUN server; extra are
// more shared STUN sockets.
func (s *Server) listenTURN(udp net.PacketConn, extra []net.PacketConn) (*relay.Server, error) {
	cfg := s.cfg.TURN
	relayIP, err := relay.PickAddress(cfg.PublicIP, s.cfg.PublicHost)
	if err != nil {
		return nil, err
	}
	secret := s.turnSecret
	return relay.Listen(relay.Config{
		Listen: cfg.Listen, UDP: udp, Extra: extra,
		TLSListen: cfg.TLSListen, TLS: s.tls,
		RelayIP: relayIP, MinPort: cfg.MinPort, MaxPort: cfg.MaxPort,
		AllowPeers:         cfg.AllowPeers,
		AllocationLifetime: cfg.AllocationLifetime,
		Secret:             func() []byte { return secret },
		Active:             s.hub.Active,
		Members:            func() int { return s.hub.Counts().Nodes },
		Usage:              s.usage,
		Log:                s.log,
	})
}
